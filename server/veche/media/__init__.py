"""Media: the only package that imports aiortc and aioice.

The server terminates each participant's WebRTC connections and forwards encoded media between
them (a selective forwarding unit): RTP payloads go from a publisher's receiver to each
subscriber's sender without being decoded or encoded.
"""

from veche.media.peer import MediaConfig, MediaPeer
from veche.media.router import MediaRouter, media_config
from veche.media.tracks import Downtrack, Uptrack

__all__ = ["Downtrack", "MediaConfig", "MediaPeer", "MediaRouter", "Uptrack", "media_config"]
