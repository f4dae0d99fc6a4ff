"""The transports of a QEMU LiveBoard (boards/live.py), which the deploy
tests use as a real board."""
from __future__ import annotations

from ktap.boards.live import LiveBoard
from ktap.deploy.serial import SerialTransport
from ktap.deploy.transport import TransportError


def wait_agent(board: LiveBoard, timeout: float = 90.0) -> SerialTransport:
    """Connects to the board's agent once the guest runs it."""
    def answer() -> SerialTransport | None:
        try:
            t = SerialTransport(board.agent_spec, timeout=2.0)
        except TransportError:          # QEMU has not opened the socket yet
            return None
        try:
            t.hello(attempts=1, wait=0.5)
        except TransportError:
            t.close()
            return None
        t.timeout = 10.0
        return t

    return board.wait_for(answer, f"the agent did not answer within {timeout:.0f} s", timeout,
                          pause=0.2)
