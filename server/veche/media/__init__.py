"""Media: the only package that imports aiortc and aioice.

The server terminates each participant's WebRTC connections and forwards encoded media between
them (a selective forwarding unit): RTP payloads go from a publisher's receiver to each
subscriber's sender without being decoded or encoded.

Glossary (with the names other SFUs use for the same thing):

- **MediaRooms** (``rooms.py``): every room's media on this server (mediasoup: a *worker*).
- **MediaRoom** (``room.py``): one room — its members, who receives what, the active speaker,
  the recording (mediasoup: *Router*; Galène: *group*).
- **MediaPeer** (``peer.py``): one participant's two connections, a *publish* leg
  (``publish.py``, the client offers, carrying its own tracks) and a *subscribe* leg
  (``subscribe.py``, the server offers, carrying everyone else's) (mediasoup: two
  *Transports*; Galène: *Up* and *Down* connections).
- **Uptrack** (``tracks.py``): one track a participant publishes, its packets turned into whole
  frames (mediasoup: *Producer*; Galène: *UpTrack*).
- **Downtrack** (``tracks.py``): one subscriber's copy of an uptrack (mediasoup: *Consumer*;
  Galène: *DownTrack*), carried by a **SenderFeed** on one subscriber transceiver, numbered by a
  **StreamRewriter** (``rewriter.py``) and written by a **PacketWriter** (``internals.py``).
- **Layer** (``tracks.py``, ``simulcast.py``): one of a simulcast uptrack's RTP streams (the
  same video at another size); each downtrack is sent one (mediasoup: *spatial layer*).
- **Temporal layer** (``temporal.py``): the frames of a VP8 layer encoded in three temporal
  layers (TID 0-2) with one TID, each doubling the frame rate; a downtrack's **TemporalFilter**
  leaves out those above what it is to be sent (mediasoup: *temporal layer*).
- **LinkBudget** (``bandwidth.py``): what one subscriber's link carries, from its REMB and
  receiver reports; a **ViewerBandwidth** (``allocator.py``) shares it out over the layers of
  the videos the subscriber is sent (LiveKit: the *stream allocator*; mediasoup: a transport's
  available bitrate shared over its consumers' *preferred layers*).
- **PipeLink** (``pipe.py``): this process's end of a pipe to another Veche process of the same
  room (mediasoup: a *PipeTransport*; Jitsi: a *relay*); a **PipedOut** sends an uptrack over
  it, a **PipedIn** stands a remote publisher's track in as a local uptrack.
- ``codecs.py`` chooses each publisher's codec for its room; ``internals.py`` holds every use of
  aiortc's private members; ``backoff.py`` says how long a participant whose media keeps failing
  waits before it is reset again; ``governor.py`` lowers the least important videos when the
  server is overloaded, as ``udpstats.py`` and the event loop's lag tell it.
"""

from veche.media.peer import MediaConfig, MediaPeer
from veche.media.room import MediaRoom
from veche.media.rooms import MediaRooms
from veche.media.subscribe import ShownVideos
from veche.media.tracks import Downtrack, Uptrack

__all__ = [
    "Downtrack",
    "MediaConfig",
    "MediaPeer",
    "MediaRoom",
    "MediaRooms",
    "ShownVideos",
    "Uptrack",
]
