"""A media socket's receive buffer holds about a fifth of a second of what comes in on it."""

from __future__ import annotations

import socket

from veche.media.recvbuf import BUDGET, FLOOR, PACKET_COST, ReceiveBuffer, buffer_size


def test_buffer_size_is_the_budget_of_the_rate_within_floor_and_ceiling() -> None:
    """A light stream gets the floor, a heavy one the kernel's default at most, and one
    between its rate times the budget."""
    assert buffer_size(10, 212992) == FLOOR
    assert buffer_size(5000, 212992) == 212992
    assert buffer_size(300, 212992) == round(300 * BUDGET * PACKET_COST)
    assert buffer_size(10, 16384) == 16384  # a ceiling below the floor wins


def test_receive_buffer_shrinks_a_real_socket_to_what_it_reads() -> None:
    """After a second of 100 packets a second, the socket's buffer holds a fifth of a second
    of them, as the kernel reports it; a stream that grows gets a larger one again."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        default = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        buffer = ReceiveBuffer(sock, 0.0)
        assert buffer.size == default
        for number in range(1, 101):
            buffer.count(number / 100)
        expected = buffer_size(100, default)
        assert expected < default
        assert buffer.size == sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert abs(buffer.size - expected) <= 2
        for number in range(1, 401):
            buffer.count(1 + number / 400)
        assert buffer.size == sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert abs(buffer.size - buffer_size(400, default)) <= 2


def test_receive_buffer_without_a_socket_sizes_nothing() -> None:
    """A TCP transport's tap counts without touching any socket."""
    buffer = ReceiveBuffer(None, 0.0)
    for number in range(300):
        buffer.count(number / 100)
    assert buffer.size == 0
