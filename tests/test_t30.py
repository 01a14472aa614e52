"""The T.30 transmitter state machine, driven by hand-made far ends (no I/O).

Each test scripts what the modem reports (frames with good or bad FCS, result
codes, timeouts) and checks the actions the machine takes and its result.
"""

from __future__ import annotations

import dataclasses

import pytest

from faxgate.faxd import frames as fr
from faxgate.faxd.frames import Frame, Session
from faxgate.faxd.t30 import (
    AwaitSilence,
    Dial,
    Finished,
    FrameReceived,
    HangUp,
    ModemResult,
    ReceiveFrame,
    SenderOptions,
    SendFrames,
    SendPage,
    SendTraining,
    Silence,
    T30Sender,
    TimerExpired,
)

OK = ModemResult("OK")


class CodedPages:
    """Stand-in page data: the machine only needs bytes per page and session."""

    def __init__(self, count: int, resolution: str = "fine") -> None:
        self.count = count
        self.resolution = resolution
        self.sessions: list[tuple[int, Session]] = []

    def encode(self, index: int, session: Session) -> bytes:
        self.sessions.append((index, session))
        return bytes([index]) * 2000


def rx(fcf: int, fif: bytes = b"", *, final: bool = True, fcs_ok: bool = True) -> FrameReceived:
    """A frame as a Class 1 modem hands it over: with its two FCS bytes."""
    data = Frame(fcf, fif, final).to_bytes()
    fcs = fr.crc16_itu(data) ^ 0xFFFF
    return FrameReceived(data + fcs.to_bytes(2, "little"), fcs_ok)


CSI = rx(fr.CSI, fr.encode_ident("+49 30 1234567"), final=False)
DIS_V17 = rx(fr.DIS, fr.build_dis("V.17"))


def answer(dis: FrameReceived = DIS_V17) -> list:
    return [CSI, dis]


class TxResult:
    """A non-OK answer to a transmit action (SendFrames, SendPage, ...)."""

    def __init__(self, code: str) -> None:
        self.event = ModemResult(code)


def drive(machine: T30Sender, replies: list, step: float = 0.05):
    """Run the machine: Dial/ReceiveFrame take the next reply; transmit actions get OK
    unless the next reply is a TxResult. Timeouts advance the clock by the timeout."""
    now = 100.0
    actions = [machine.start(now)]
    while not isinstance(actions[-1], Finished):
        action = actions[-1]
        if isinstance(action, Dial | ReceiveFrame):
            assert replies, f"machine waits ({action}) but the script is over"
            event = replies.pop(0)
            assert not isinstance(event, TxResult), f"{action} got a transmit answer"
            now += action.timeout if isinstance(event, TimerExpired) else step
        else:
            event = replies.pop(0).event if replies and isinstance(replies[0], TxResult) else OK
            now += step
        actions.append(machine.handle(event, now))
    assert replies == [], "the script was not used up"
    return actions, actions[-1].result


def summary(actions) -> list[str]:
    out = []
    for a in actions:
        if isinstance(a, Dial):
            out.append(f"dial {a.command}")
        elif isinstance(a, ReceiveFrame):
            out.append("rx")
        elif isinstance(a, SendFrames):
            out.append("tx " + "+".join(Frame.parse(f).name for f in a.frames))
        elif isinstance(a, SendTraining):
            out.append(f"tcf {a.modulation}")
        elif isinstance(a, SendPage):
            out.append(f"page{a.page} {a.modulation}")
        elif isinstance(a, Silence):
            out.append(f"fts {a.tens_of_ms}")
        elif isinstance(a, AwaitSilence):
            out.append(f"frs {a.tens_of_ms}")
        elif isinstance(a, HangUp):
            out.append("hangup")
        else:
            out.append(f"done {a.result.reason or 'ok'}")
    return out


def dcs_of(action: SendFrames) -> Session:
    frame = Frame.parse(action.frames[-1])
    assert frame.kind == fr.DCS
    return fr.parse_dcs(frame.fif)


def sent_dcs(actions) -> list[Session]:
    return [
        dcs_of(a)
        for a in actions
        if isinstance(a, SendFrames) and Frame.parse(a.frames[-1]).kind == fr.DCS
    ]


TRAIN = ["frs 7", "tx TSI+DCS", "fts 8", "tcf 145", "rx"]
OPTS = SenderOptions(station_id="+86 755 1234", t1=35.0, t4=3.0)


def test_two_pages_happy_path():
    pages = CodedPages(2)
    machine = T30Sender("5551234", pages, OPTS)
    actions, result = drive(machine, [*answer(), rx(fr.CFR), rx(fr.MCF), rx(fr.MCF)])
    assert summary(actions) == [
        "dial ATDT5551234",
        "rx",
        *TRAIN,
        "frs 7",
        "page0 146",
        "fts 8",
        "tx MPS",
        "rx",
        "frs 7",
        "page1 146",
        "fts 8",
        "tx EOP",
        "rx",
        "frs 7",
        "tx DCN",
        "hangup",
        "done ok",
    ]
    assert result.ok and result.reason is None
    assert result.pages_confirmed == 2 and result.confirmed_pages == [0, 1]
    assert result.next_page == 2
    assert result.remote_ident == "+49 30 1234567"
    assert (result.bit_rate, result.resolution, result.coding) == (14400, "fine", "mr")
    assert result.reached_fax_carrier
    # our TSI went out reversed, with the X bit set on every command
    tx = next(a for a in actions if isinstance(a, SendFrames))
    tsi = Frame.parse(tx.frames[0])
    assert tsi.fcf == fr.TSI | fr.X_BIT and not tsi.final
    assert fr.decode_ident(tsi.fif) == "+86 755 1234"
    names = [t[2] for t in result.transcript]
    assert names[:2] == ["CSI", "DIS"] and names[-1] == "DCN"
    assert result.to_dict()["ok"] is True


def test_tcf_is_one_and_a_half_seconds_of_zeros_at_the_rate():
    machine = T30Sender("1", CodedPages(1), OPTS)
    actions, _ = drive(machine, [*answer(), rx(fr.CFR), rx(fr.MCF)])
    tcf = next(a for a in actions if isinstance(a, SendTraining))
    assert tcf.length == 14400 * 3 // 2 // 8


def test_tcf_waits_for_the_modem_only_as_long_as_the_line_needs():
    # A line that drops during TCF leaves a modem silent; the wait ends after
    # TCF plus the data margin, in line time, not after a fixed half minute.
    options = dataclasses.replace(OPTS, data_margin=2.0, time_scale=10.0)
    actions, _ = drive(T30Sender("1", CodedPages(1), options), [*answer(), rx(fr.CFR), rx(fr.MCF)])
    tcf = next(a for a in actions if isinstance(a, SendTraining))
    assert tcf.timeout == pytest.approx((1.5 + 2.0) / 10.0)


@pytest.mark.parametrize(
    ("family", "rate", "code"),
    [("V.29", 9600, 96), ("V.27ter", 4800, 48), ("V.29only", 9600, 96)],
)
def test_far_end_modem_limits_the_rate(family, rate, code):
    dis = rx(fr.DIS, fr.build_dis(family))
    actions, result = drive(
        T30Sender("1", CodedPages(1), OPTS), [*answer(dis), rx(fr.CFR), rx(fr.MCF)]
    )
    assert result.ok and result.bit_rate == rate
    assert dcs_of(next(a for a in actions if isinstance(a, SendFrames))).modulation.bit_rate == rate
    assert [a.modulation for a in actions if isinstance(a, SendPage)] == [code]


def test_our_max_rate_caps_the_choice():
    options = SenderOptions(max_rate=7200)
    _, result = drive(T30Sender("1", CodedPages(1), options), [*answer(), rx(fr.CFR), rx(fr.MCF)])
    assert result.bit_rate == 7200 and result.modulation == "V.17 7200"


def test_standard_only_far_end_and_mh_only():
    dis = rx(fr.DIS, fr.build_dis("V.17", fine=False, mr=False, scan_code=0))
    pages = CodedPages(1, "fine")
    actions, result = drive(T30Sender("1", pages, OPTS), [*answer(dis), rx(fr.CFR), rx(fr.MCF)])
    session = sent_dcs(actions)[0]
    assert (session.resolution, session.coding, session.scan_ms) == ("standard", "mh", 20)
    assert (result.resolution, result.coding) == ("standard", "mh")
    # the encoder was asked for fill up to 20 ms per line at 14400 bit/s
    assert pages.sessions[0][1].min_bits_per_line == 288


def test_scan_time_halves_at_fine_when_the_far_end_says_so():
    dis = rx(fr.DIS, fr.build_dis("V.17", scan_code=0b011))  # 20 ms, fine = 1/2
    actions, _ = drive(T30Sender("1", CodedPages(1), OPTS), [*answer(dis), rx(fr.CFR), rx(fr.MCF)])
    assert sent_dcs(actions)[0].scan_ms == 10


def test_ftt_steps_down_one_rate_at_a_time():
    replies = [*answer(), rx(fr.FTT), rx(fr.FTT), rx(fr.CFR), rx(fr.MCF)]
    actions, result = drive(T30Sender("1", CodedPages(1), OPTS), replies)
    assert [s.modulation.bit_rate for s in sent_dcs(actions)] == [14400, 12000, 9600]
    assert [a.modulation for a in actions if isinstance(a, SendTraining)] == [145, 121, 97]
    assert result.ok and result.bit_rate == 9600


def test_ftt_at_every_rate_fails_training():
    dis = rx(fr.DIS, fr.build_dis("V.27ter"))
    replies = [*answer(dis), rx(fr.FTT), rx(fr.FTT), rx(fr.FTT), rx(fr.FTT)]
    actions, result = drive(T30Sender("1", CodedPages(1), OPTS), replies)
    assert [s.modulation.bit_rate for s in sent_dcs(actions)] == [4800, 2400, 2400, 2400]
    assert result.reason == "training_failed" and not result.ok
    assert summary(actions)[-3:] == ["tx DCN", "hangup", "done training_failed"]


def test_bad_fcs_on_cfr_repeats_the_command():
    replies = [*answer(), rx(fr.CFR, fcs_ok=False), TimerExpired(), rx(fr.CFR), rx(fr.MCF)]
    actions, result = drive(T30Sender("1", CodedPages(1), OPTS), replies)
    assert result.ok
    assert len(sent_dcs(actions)) == 2
    assert [s.modulation.bit_rate for s in sent_dcs(actions)] == [14400, 14400]
    assert any(t[2] == "CFR (bad FCS)" for t in result.transcript)


def test_missing_response_to_mps_is_repeated_then_gives_up():
    replies = [*answer(), rx(fr.CFR), TimerExpired(), TimerExpired(), TimerExpired()]
    actions, result = drive(T30Sender("1", CodedPages(2), OPTS), replies)
    assert summary(actions).count("tx MPS") == 3
    assert result.reason == "timeout" and result.pages_confirmed == 0
    assert summary(actions)[-3:] == ["tx DCN", "hangup", "done timeout"]


def test_one_lost_mcf_then_recovery():
    replies = [*answer(), rx(fr.CFR), TimerExpired(), rx(fr.MCF)]
    actions, result = drive(T30Sender("1", CodedPages(1), OPTS), replies)
    assert summary(actions).count("tx EOP") == 2
    assert result.ok and result.pages_confirmed == 1


def test_crp_repeats_the_command():
    replies = [*answer(), rx(fr.CFR), rx(fr.CRP), rx(fr.MCF)]
    actions, result = drive(T30Sender("1", CodedPages(1), OPTS), replies)
    assert summary(actions).count("tx EOP") == 2 and result.ok


def test_garbled_and_bad_fcs_dis_wait_for_the_repeat():
    garbled = FrameReceived(b"\xff\x13", True)
    bad = rx(fr.DIS, fr.build_dis("V.17"), fcs_ok=False)
    replies = [CSI, bad, garbled, TimerExpired(), DIS_V17, rx(fr.CFR), rx(fr.MCF)]
    actions, result = drive(T30Sender("1", CodedPages(1), OPTS), replies)
    assert result.ok
    assert [t[2] for t in result.transcript][:4] == ["CSI", "DIS (bad FCS)", "garbled", "TIMEOUT"]


def test_no_dis_within_t1_is_a_timeout():
    options = SenderOptions(t1=10.0, t4=3.0)
    replies = [CSI, *[TimerExpired()] * 2]
    actions, result = drive(T30Sender("1", CodedPages(1), options), replies)
    assert result.reason == "timeout" and result.reached_fax_carrier


def test_dcn_mid_call_is_remote_hangup_and_we_send_no_dcn():
    replies = [*answer(), rx(fr.CFR), rx(fr.MCF), rx(fr.DCN)]
    actions, result = drive(T30Sender("1", CodedPages(3), OPTS), replies)
    assert result.reason == "remote_hangup"
    assert result.pages_confirmed == 1 and result.next_page == 1
    assert summary(actions)[-2:] == ["hangup", "done remote_hangup"]
    assert "tx DCN" not in summary(actions)


def test_line_drop_while_sending_a_page_is_remote_hangup():
    replies = [*answer(), rx(fr.CFR), rx(fr.MCF), TxResult("OK"), TxResult("NO CARRIER")]
    actions, result = drive(T30Sender("1", CodedPages(3), OPTS), replies)
    assert result.reason == "remote_hangup" and result.pages_confirmed == 1


def test_silence_after_the_far_end_hung_up_is_remote_hangup():
    no_carrier = ModemResult("NO CARRIER")
    replies = [*answer(), rx(fr.CFR), *[no_carrier, TimerExpired()] * 3]
    _, result = drive(T30Sender("1", CodedPages(1), OPTS), replies)
    assert result.reason == "remote_hangup"


def test_rtn_retrains_lower_and_resends_the_page():
    replies = [*answer(), rx(fr.CFR), rx(fr.RTN), rx(fr.CFR), rx(fr.MCF)]
    actions, result = drive(T30Sender("1", CodedPages(1), OPTS), replies)
    assert [a.page for a in actions if isinstance(a, SendPage)] == [0, 0]
    assert [s.modulation.bit_rate for s in sent_dcs(actions)] == [14400, 12000]
    assert result.ok and result.bit_rate == 12000


def test_rtn_after_the_third_resend_rejects_the_page():
    replies = [*answer(), rx(fr.CFR)] + [rx(fr.RTN), rx(fr.CFR)] * 3 + [rx(fr.RTN)]
    actions, result = drive(T30Sender("1", CodedPages(2), OPTS), replies)
    assert result.reason == "page_rejected" and result.pages_confirmed == 0
    assert len([a for a in actions if isinstance(a, SendPage)]) == 4  # sent, resent 3 times
    assert [s.modulation.bit_rate for s in sent_dcs(actions)] == [14400, 12000, 9600, 9600]


def test_third_resend_after_rtn_can_still_succeed():
    replies = [*answer(), rx(fr.CFR)] + [rx(fr.RTN), rx(fr.CFR)] * 3 + [rx(fr.MCF)]
    actions, result = drive(T30Sender("1", CodedPages(1), OPTS), replies)
    assert result.ok and result.confirmed_pages == [0]


def test_rtp_and_pip_confirm_then_retrain():
    replies = [*answer(), rx(fr.CFR), rx(fr.RTP), rx(fr.CFR), rx(fr.PIP), rx(fr.CFR), rx(fr.MCF)]
    actions, result = drive(T30Sender("1", CodedPages(3), OPTS), replies)
    assert result.ok and result.confirmed_pages == [0, 1, 2]
    assert len(sent_dcs(actions)) == 3


def test_pin_is_treated_like_rtn():
    replies = [*answer(), rx(fr.CFR), rx(fr.PIN), rx(fr.CFR), rx(fr.MCF)]
    actions, result = drive(T30Sender("1", CodedPages(1), OPTS), replies)
    assert [a.page for a in actions if isinstance(a, SendPage)] == [0, 0] and result.ok


def test_far_end_repeating_dis_gets_dcs_again():
    replies = [*answer(), DIS_V17, rx(fr.CFR), rx(fr.MCF)]
    actions, result = drive(T30Sender("1", CodedPages(1), OPTS), replies)
    assert len(sent_dcs(actions)) == 2 and result.ok


def test_resume_from_first_unconfirmed_page():
    pages = CodedPages(3)
    replies = [*answer(), rx(fr.CFR), rx(fr.MCF), rx(fr.MCF)]
    actions, result = drive(T30Sender("1", pages, OPTS, first_page=1), replies)
    assert [a.page for a in actions if isinstance(a, SendPage)] == [1, 2]
    assert result.confirmed_pages == [1, 2] and result.pages_confirmed == 2
    assert summary(actions).count("tx MPS") == 1 and summary(actions).count("tx EOP") == 1


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("BUSY", "busy"),
        ("NO ANSWER", "no_answer"),
        ("NO DIALTONE", "no_dialtone"),
        ("NO CARRIER", "no_carrier"),
        ("ERROR", "modem_error"),
    ],
)
def test_dial_results(code, reason):
    actions, result = drive(T30Sender("1", CodedPages(1), OPTS), [ModemResult(code)])
    assert summary(actions) == ["dial ATDT1", f"done {reason}"]
    assert result.reason == reason and not result.reached_fax_carrier and result.dials == 1


def test_late_no_carrier_after_dialling_is_not_a_fax():
    machine = T30Sender("1", CodedPages(1), OPTS)
    actions, result = drive(machine, [ModemResult("NO CARRIER")], step=OPTS.answer_grace + 1)
    assert result.reason == "not_a_fax"


def test_answer_without_fax_is_not_a_fax():
    actions, result = drive(T30Sender("1", CodedPages(1), OPTS), [TimerExpired()])
    assert result.reason == "not_a_fax"
    assert summary(actions) == ["dial ATDT1", "hangup", "done not_a_fax"]


def test_modem_error_while_sending_frames():
    replies = [*answer(), TxResult("OK"), TxResult("ERROR")]
    actions, result = drive(T30Sender("1", CodedPages(1), OPTS), replies)
    assert result.reason == "modem_error"


def test_turnaround_silence_is_optional_and_its_failure_harmless():
    replies = [*answer(), TxResult("ERROR"), rx(fr.CFR), TxResult("TIMEOUT"), rx(fr.MCF)]
    actions, result = drive(T30Sender("1", CodedPages(1), OPTS), replies)
    assert result.ok and summary(actions).count("frs 7") == 3
    options = SenderOptions(turnaround_silence=0)
    actions, result = drive(
        T30Sender("1", CodedPages(1), options), [*answer(), rx(fr.CFR), rx(fr.MCF)]
    )
    assert result.ok and not any(isinstance(a, AwaitSilence) for a in actions)


def test_far_end_that_cannot_receive():
    dis = rx(fr.DIS, fr.build_dis("V.17", receiver=False))
    actions, result = drive(T30Sender("1", CodedPages(1), OPTS), [*answer(dis)])
    assert result.reason == "not_a_fax" and result.reached_fax_carrier
    assert summary(actions)[-3:] == ["tx DCN", "hangup", "done not_a_fax"]


def test_no_common_modulation():
    options = SenderOptions(max_rate=2400)
    dis = rx(fr.DIS, fr.build_dis("V.29only"))
    _, result = drive(T30Sender("1", CodedPages(1), options), [*answer(dis)])
    assert result.reason == "training_failed"


def test_nsf_before_csi_and_dis_is_skipped():
    # NSF: T.35 country code, vendor code and private bytes; nothing we use.
    nsf = rx(fr.NSF, bytes.fromhex("ad0059f0c1a2b3c4"), final=False)
    replies = [nsf, CSI, DIS_V17, rx(fr.CFR), rx(fr.MCF)]
    actions, result = drive(T30Sender("1", CodedPages(1), OPTS), replies)
    assert result.ok and result.remote_ident == "+49 30 1234567"
    assert [t[2] for t in result.transcript][:3] == ["NSF", "CSI", "DIS"]


def test_outside_line_prefix_and_pauses_reach_the_dial_command():
    options = SenderOptions(dial_prefix="ATDP")
    actions, result = drive(T30Sender("9,W5550199", CodedPages(1), options), [ModemResult("BUSY")])
    assert summary(actions) == ["dial ATDP9,W5550199", "done busy"]


@pytest.mark.parametrize("number", ["", "555;ATZ", "555\r", "555\n", "+49301234", "1" * 41])
def test_dial_string_is_checked(number):
    with pytest.raises(ValueError):
        T30Sender(number, CodedPages(1), OPTS)


def test_first_page_out_of_range():
    with pytest.raises(ValueError):
        T30Sender("1", CodedPages(2), OPTS, first_page=2)
