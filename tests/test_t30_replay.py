"""Replay transcripts recorded from real calls over the simulated line.

Every recorded event is fed back, at its recorded time, into a fresh
``T30Sender``; it must take exactly the recorded actions and reach the recorded
result. Then the same real frames are replayed with faults cut in (a lost
response, a corrupted one) to check the recovery on real frame bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faxgate.faxd.frames import Session
from faxgate.faxd.t30 import (
    Dial,
    Finished,
    FrameReceived,
    ModemResult,
    ReceiveFrame,
    SenderOptions,
    SendFrames,
    T30Sender,
    TimerExpired,
    action_to_dict,
    event_from_dict,
)

ALL = sorted((Path(__file__).parent / "transcripts").glob("*.json"))
#: Recorded from real calls: the full exchange, replayed step by step.
TRANSCRIPTS = [p for p in ALL if not p.stem.startswith("handmade_")]
#: Written by hand: what the modem reports, and what we must send in reply.
HANDMADE = [p for p in ALL if p.stem.startswith("handmade_")]


class CodedPages:
    def __init__(self, count: int, resolution: str) -> None:
        self.count = count
        self.resolution = resolution

    def encode(self, index: int, session: Session) -> bytes:
        return bytes(1000)


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def machine_for(data: dict) -> T30Sender:
    return T30Sender(
        data["number"],
        CodedPages(data["pages"], data["resolution"]),
        SenderOptions(**data["options"]),
        first_page=data["first_page"],
    )


def test_there_are_transcripts_of_every_kind():
    names = {p.stem for p in TRANSCRIPTS}
    assert {"v17_fine_two_pages", "hangup_after_page_1_of_3", "busy"} <= names
    assert len(names) >= 5 and len(HANDMADE) >= 4


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_replay_reproduces_the_call(path):
    data = load(path)
    machine = machine_for(data)
    exchange = data["exchange"]
    action = machine.start(0.0)
    steps = 0
    for entry in exchange:
        if "action" in entry:
            assert action_to_dict(action) == entry["action"], f"step {steps}"
            steps += 1
        else:
            action = machine.handle(event_from_dict(entry), entry["t"])
    assert isinstance(action, Finished)
    result = action.result
    expected = data["result"]
    assert result.ok == expected["ok"] and result.reason == expected["reason"]
    assert result.confirmed_pages == expected["confirmed_pages"]
    assert result.bit_rate == expected["bit_rate"]
    assert result.remote_ident == expected["remote_ident"]
    assert steps == sum(1 for e in exchange if "action" in e)


def recorded_answers(data: dict) -> list:
    """The events answering Dial/ReceiveFrame, in order, from a recording."""
    answers, waiting = [], False
    for entry in data["exchange"]:
        if "action" in entry:
            waiting = "dial" in entry["action"] or "receive" in entry["action"]
        elif waiting:
            answers.append(event_from_dict(entry))
    return answers


def run_with_answers(machine: T30Sender, answers: list):
    now = 0.0
    action = machine.start(now)
    actions = [action]
    while not isinstance(action, Finished):
        now += 0.01
        if isinstance(action, Dial | ReceiveFrame):
            event = answers.pop(0)
            if isinstance(event, TimerExpired):
                now += action.timeout
        else:
            event = ModemResult("OK")
        action = machine.handle(event, now)
        actions.append(action)
    return actions, action.result


def frame_names(actions) -> list[str]:
    from faxgate.faxd.frames import Frame

    return [
        "+".join(Frame.parse(f).name for f in a.frames)
        for a in actions
        if isinstance(a, SendFrames)
    ]


@pytest.mark.parametrize("path", HANDMADE, ids=lambda p: p.stem)
def test_handmade_transcript(path):
    data = load(path)
    answers = [event_from_dict(entry) for entry in data["answers"]]
    actions, result = run_with_answers(machine_for(data), answers)
    assert answers == [], "the far end's script was not used up"
    assert frame_names(actions) == data["expect_sent"]
    expect = data["expect"]
    assert result.reason == expect["reason"]
    assert result.confirmed_pages == expect["confirmed_pages"]
    assert (result.bit_rate, result.resolution) == (expect["bit_rate"], expect["resolution"])


def test_real_frames_with_the_first_mcf_lost():
    data = load(Path(__file__).parent / "transcripts" / "v17_fine_two_pages.json")
    answers = recorded_answers(data)
    # answers: CSI, DIS, CFR, MCF (page 1), MCF (page 2)
    mcf = answers[3]
    answers[3:4] = [TimerExpired(), mcf]
    actions, result = run_with_answers(machine_for(data), answers)
    assert result.ok and result.confirmed_pages == [0, 1]
    assert frame_names(actions).count("MPS") == 2


def test_real_frames_with_a_corrupted_cfr():
    data = load(Path(__file__).parent / "transcripts" / "v17_fine_two_pages.json")
    answers = recorded_answers(data)
    cfr = answers[2]
    assert isinstance(cfr, FrameReceived)
    answers[2:3] = [FrameReceived(cfr.data[:-1] + b"\x00", False), TimerExpired(), cfr]
    actions, result = run_with_answers(machine_for(data), answers)
    assert result.ok
    assert frame_names(actions).count("TSI+DCS") == 2


def test_real_frames_with_dcn_instead_of_the_last_mcf():
    data = load(Path(__file__).parent / "transcripts" / "v17_fine_two_pages.json")
    answers = recorded_answers(data)
    answers[4] = FrameReceived(bytes.fromhex("ff13fa"), True)
    actions, result = run_with_answers(machine_for(data), answers)
    assert result.reason == "remote_hangup" and result.confirmed_pages == [0]
    assert "DCN" not in frame_names(actions)
