"""ctypes bindings for the parts of spandsp 0.0.6 (Debian ``libspandsp2``) the line uses.

Only what the simulated line needs: the T.31 Class 1 modem, the audio fax
terminal (``fax_*``) and its T.30 engine. Prototypes, enums and the
``t30_stats_t`` layout follow the 0.0.6 headers in ``/usr/include/spandsp``;
later spandsp releases changed several of them, so this module refuses any
other soname.
"""

from __future__ import annotations

import ctypes
import enum
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char_p,
    c_int,
    c_int16,
    c_size_t,
    c_uint8,
    c_void_p,
)
from functools import cache

from faxgate.errors import PermanentError

LIBRARY = "libspandsp.so.2"
SAMPLE_RATE = 8000


class SpandspMissing(PermanentError):
    """libspandsp2 (0.0.6) is not installed, so no simulated line can run."""


# --- at_interpreter.h -------------------------------------------------------------------


class CallEvent(enum.IntEnum):
    """``enum at_call_event_e``: what the line tells the modem about its call."""

    ALERTING = 1
    CONNECTED = 2
    ANSWERED = 3
    BUSY = 4
    NO_DIALTONE = 5
    NO_ANSWER = 6
    HANGUP = 7


class ModemControl(enum.IntEnum):
    """``enum at_modem_control_operation_e``: what the modem asks of the line."""

    CALL = 0
    ANSWER = 1
    HANGUP = 2
    OFFHOOK = 3
    ONHOOK = 4
    DTR = 5
    RTS = 6
    CTS = 7
    CAR = 8
    RNG = 9
    DSR = 10
    SETID = 11
    RESTART = 12
    DTE_TIMEOUT = 13


# --- t30.h ---------------------------------------------------------------------------------

SUPPORT_V27TER = 0x01
SUPPORT_V29 = 0x02
SUPPORT_V17 = 0x04

SUPPORT_T4_1D_COMPRESSION = 0x02
SUPPORT_T4_2D_COMPRESSION = 0x04

SUPPORT_STANDARD_RESOLUTION = 0x01
SUPPORT_FINE_RESOLUTION = 0x02
SUPPORT_SUPERFINE_RESOLUTION = 0x04
SUPPORT_R8_RESOLUTION = 0x20000

# T.30 end of procedure as the phase D handler reports it (t30_fcf.h, X bit cleared).
FCF_EOP = 0x2E

# The T30_ERR_* completion codes of 0.0.6, in enum order (t30.h); index = code.
COMPLETION_CODES = [
    "OK",
    "CEDTONE",
    "T0_EXPIRED",
    "T1_EXPIRED",
    "T3_EXPIRED",
    "HDLC_CARRIER",
    "CANNOT_TRAIN",
    "OPER_INT_FAIL",
    "INCOMPATIBLE",
    "RX_INCAPABLE",
    "TX_INCAPABLE",
    "NORESSUPPORT",
    "NOSIZESUPPORT",
    "UNEXPECTED",
    "TX_BADDCS",
    "TX_BADPG",
    "TX_ECMPHD",
    "TX_GOTDCN",
    "TX_INVALRSP",
    "TX_NODIS",
    "TX_PHBDEAD",
    "TX_PHDDEAD",
    "TX_T5EXP",
    "RX_ECMPHD",
    "RX_GOTDCS",
    "RX_INVALCMD",
    "RX_NOCARRIER",
    "RX_NOEOL",
    "RX_NOFAX",
    "RX_T2EXPDCN",
    "RX_T2EXPD",
    "RX_T2EXPFAX",
    "RX_T2EXPMPS",
    "RX_T2EXPRR",
    "RX_T2EXP",
    "RX_DCNWHY",
    "RX_DCNDATA",
    "RX_DCNFAX",
    "RX_DCNPHD",
    "RX_DCNRRD",
    "RX_DCNNORTN",
    "FILEERROR",
    "NOPAGE",
    "BADTIFF",
    "BADPAGE",
    "BADTAG",
    "BADTIFFHDR",
    "NOMEM",
    "RETRYDCN",
    "CALLDROPPED",
    "NOPOLL",
    "IDENT_UNACCEPTABLE",
    "SUB_UNACCEPTABLE",
    "SEP_UNACCEPTABLE",
    "PSA_UNACCEPTABLE",
    "SID_UNACCEPTABLE",
    "PWD_UNACCEPTABLE",
    "TSA_UNACCEPTABLE",
    "IRA_UNACCEPTABLE",
    "CIA_UNACCEPTABLE",
    "ISP_UNACCEPTABLE",
    "CSA_UNACCEPTABLE",
]

# t4_rx.h: T4_COMPRESSION_ITU_T4_1D, _T4_2D, _T6 as the names fax people use.
ENCODING_NAMES = {1: "MH", 2: "MR", 3: "MMR"}


def completion_name(code: int) -> str:
    """Stable lower-case name of a T30_ERR_* code: ``0`` → ``"ok"``, 36 → ``"rx_dcndata"``."""
    if 0 <= code < len(COMPLETION_CODES):
        return COMPLETION_CODES[code].lower()
    return f"t30_error_{code}"


class T30Stats(Structure):
    """``t30_stats_t`` of 0.0.6: fifteen ints (the rtp/rtn counters are ``#if 0``)."""

    _fields_ = [
        ("bit_rate", c_int),
        ("error_correcting_mode", c_int),
        ("pages_tx", c_int),
        ("pages_rx", c_int),
        ("pages_in_file", c_int),
        ("x_resolution", c_int),
        ("y_resolution", c_int),
        ("width", c_int),
        ("length", c_int),
        ("image_size", c_int),
        ("encoding", c_int),
        ("bad_rows", c_int),
        ("longest_bad_row_run", c_int),
        ("error_correcting_mode_retries", c_int),
        ("current_status", c_int),
    ]


# --- callback types (0.0.6 signatures) -------------------------------------------------------

# int at_tx_handler(at_state_t *s, void *user_data, const uint8_t *buf, size_t len)
AtTxHandler = CFUNCTYPE(c_int, c_void_p, c_void_p, POINTER(c_uint8), c_size_t)
# int t31_modem_control_handler(t31_state_t *s, void *user_data, int op, const char *num)
# ``num`` is a char* for CALL and an int smuggled in a pointer for CTS, RNG, ...
ModemControlHandler = CFUNCTYPE(c_int, c_void_p, c_void_p, c_int, c_void_p)
# int t30_phase_d_handler(t30_state_t *s, void *user_data, int result)
PhaseDHandler = CFUNCTYPE(c_int, c_void_p, c_void_p, c_int)
# void t30_phase_e_handler(t30_state_t *s, void *user_data, int completion_code)
PhaseEHandler = CFUNCTYPE(None, c_void_p, c_void_p, c_int)
# void t30_real_time_frame_handler(t30_state_t *s, void *user_data, int direction,
#                                  const uint8_t msg[], int len)
FrameHandler = CFUNCTYPE(None, c_void_p, c_void_p, c_int, POINTER(c_uint8), c_int)

Samples = c_int16 * 160

_PROTOTYPES: dict[str, tuple[object, list[object]]] = {
    # t31.h
    "t31_init": (
        c_void_p,
        [c_void_p, AtTxHandler, c_void_p, ModemControlHandler, c_void_p, c_void_p, c_void_p],
    ),
    "t31_free": (c_int, [c_void_p]),
    "t31_at_rx": (c_int, [c_void_p, c_char_p, c_int]),
    "t31_rx": (c_int, [c_void_p, POINTER(c_int16), c_int]),
    "t31_tx": (c_int, [c_void_p, POINTER(c_int16), c_int]),
    "t31_call_event": (None, [c_void_p, c_int]),
    # fax.h
    "fax_init": (c_void_p, [c_void_p, c_int]),
    "fax_free": (c_int, [c_void_p]),
    "fax_rx": (c_int, [c_void_p, POINTER(c_int16), c_int]),
    "fax_tx": (c_int, [c_void_p, POINTER(c_int16), c_int]),
    "fax_get_t30_state": (c_void_p, [c_void_p]),
    # t30.h / t30_api.h / t30_logging.h
    "t30_set_rx_file": (None, [c_void_p, c_char_p, c_int]),
    "t30_set_tx_ident": (c_int, [c_void_p, c_char_p]),
    "t30_get_rx_ident": (c_char_p, [c_void_p]),
    "t30_set_ecm_capability": (c_int, [c_void_p, c_int]),
    "t30_set_supported_modems": (c_int, [c_void_p, c_int]),
    "t30_set_supported_resolutions": (c_int, [c_void_p, c_int]),
    "t30_set_supported_compressions": (c_int, [c_void_p, c_int]),
    "t30_set_phase_d_handler": (None, [c_void_p, PhaseDHandler, c_void_p]),
    "t30_set_phase_e_handler": (None, [c_void_p, PhaseEHandler, c_void_p]),
    "t30_set_real_time_frame_handler": (None, [c_void_p, FrameHandler, c_void_p]),
    "t30_get_transfer_statistics": (None, [c_void_p, POINTER(T30Stats)]),
    "t30_terminate": (None, [c_void_p]),
    "t30_completion_code_to_str": (c_char_p, [c_int]),
    "t30_frametype": (c_char_p, [c_uint8]),
}


@cache
def library() -> ctypes.CDLL:
    """Load libspandsp.so.2 once and declare every prototype used (wrong ones crash)."""
    try:
        lib = ctypes.CDLL(LIBRARY)
    except OSError as exc:
        raise SpandspMissing(
            f"cannot load {LIBRARY} ({exc}); install the Debian package libspandsp2 (0.0.6)"
        ) from exc
    for name, (restype, argtypes) in _PROTOTYPES.items():
        func = getattr(lib, name)
        func.restype = restype
        func.argtypes = argtypes
    return lib


def completion_text(code: int) -> str:
    """spandsp's own sentence for a T30_ERR_* code."""
    text = library().t30_completion_code_to_str(code)
    return text.decode("latin-1") if text else f"T.30 error {code}"


def frame_name(fcf: int) -> str:
    """spandsp's name for a T.30 frame control field (``DIS``, ``MCF``...)."""
    text = library().t30_frametype(fcf & 0xFF)
    return text.decode("latin-1") if text else f"0x{fcf:02X}"
