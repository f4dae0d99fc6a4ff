"""Output records as JSON lines (`--format json`, docs/output.md): one object
per record, and a final status object. kmod/ktaprun/format_json.c writes the
same bytes for the same records; tests/native/test_ktaprun.py compares them.

Strings are the records' bytes: valid UTF-8 goes out as it is, any other byte
as \\u00XX (the surrogate escapes the decoders turn such bytes into)."""
from __future__ import annotations

from ktap.backends.kbc.records import STATE
from ktap.refvm.output import Formatter
from ktap.refvm.values import Agg, Stack, Time

STATE_NAMES = {v: k for k, v in STATE.items()}
_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
          "\f": "\\f"}


def json_string(s: str) -> str:
    # bytes that were no UTF-8 alone may be with their neighbours (a printf
    # that puts two such strings side by side): decode the whole again
    s = s.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif o < 0x20:
            out.append(f"\\u{o:04x}")
        elif 0xDC80 <= o <= 0xDCFF:         # a byte that was no UTF-8
            out.append(f"\\u{o - 0xDC00:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class JsonFormatter(Formatter):
    def render(self, record: tuple) -> str:
        return getattr(self, "j_" + record[0])(*record[1:]) + "\n"

    def value(self, v) -> str:
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return json_string(v)
        if isinstance(v, Stack):
            return "[" + ",".join(json_string(self.frame(a)) for a in v) + "]"
        if isinstance(v, Time):
            return json_string(v.text())
        if isinstance(v, Agg):
            return self.agg(v)
        return '{"table":true}'

    @staticmethod
    def pairs(buckets: dict[int, int]) -> str:
        return "[" + ",".join(f"[{b},{c}]" for b, c in sorted(buckets.items()) if c) + "]"

    def agg(self, a: Agg) -> str:
        return (f'{{"count":{a.count},"sum":{a.sum},"min":{a.min},"max":{a.max},'
                f'"avg":{a.avg},"log2":{self.pairs(a.log2)},"linear":{self.pairs(a.linear)}}}')

    def entries(self, snapshot: list) -> str:
        return "[" + ",".join(f'{{"key":{self.value(k)},"value":{self.value(v)}}}'
                              for k, v in snapshot) + "]"

    def j_printf(self, index: int, values: list) -> str:
        return f'{{"type":"printf","text":{json_string(self.r_printf(index, values))}}}'

    def j_print(self, values: list) -> str:
        return '{"type":"print","values":[' + ",".join(self.value(v) for v in values) + "]}"

    def j_dump(self, snapshot: list) -> str:
        return f'{{"type":"table","entries":{self.entries(snapshot)}}}'

    def j_hist(self, snapshot: list, desc: int) -> str:
        return f'{{"type":"hist","entries":{self.entries(snapshot)}}}'

    def j_lhist(self, snapshot: list, desc: int) -> str:
        d = self.img.tables[desc]
        return (f'{{"type":"lhist","min":{d.lmin},"max":{d.lmax},"step":{d.lstep},'
                f'"entries":{self.entries(snapshot)}}}')

    def j_print_hist(self, snapshot: list, n: int) -> str:
        return f'{{"type":"print_hist","n":{n},"entries":{self.entries(snapshot)}}}'

    @staticmethod
    def status(state: int, exit_code: int, drops: dict[str, int], error: tuple | None = None
               ) -> str:
        """The last line: how the session ended. error: (message, line, col)."""
        out = (f'{{"type":"status","state":"{STATE_NAMES[state]}","exit_code":{exit_code},'
               '"drops":{' + ",".join(f"{json_string(r)}:{n}" for r, n in sorted(drops.items()))
               + "}")
        if error is not None:
            out += (f',"error":{{"message":{json_string(error[0])},"line":{error[1]},'
                    f'"col":{error[2]}}}')
        return out + "}\n"
