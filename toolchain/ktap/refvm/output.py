"""Turns output records into text. The kernel and the reference VM emit the same
records; formatting (printf, table dumps, histograms) happens here, in user space.

Records:
    ("printf", format_index, [values])     ("print", [values])
    ("dump", snapshot)                     ("print_hist", snapshot, n)
    ("hist", snapshot, table_desc_index)   ("lhist", snapshot, table_desc_index)
"""
from __future__ import annotations

from ktap.backends.kbc import bytecode as bc
from ktap.frontend.printf import Conv, parse_format
from ktap.refvm.values import Agg, Stack, Time, linear_count
from ktap.frontend import program

BAR_WIDTH = 40
HIST_HEADER = "-" * 13 + " Distribution " + "-" * 13


class Formatter:
    def __init__(self, image: bc.Image, symbolize=None):
        self.img = image
        self.word_size = image.target.word_size
        self.symbolize = symbolize or (lambda addr: None)
        self._formats = [parse_format(f) for f in image.formats]

    def render(self, record: tuple) -> str:
        return getattr(self, "r_" + record[0])(*record[1:])

    # -- scalar values ---------------------------------------------------
    def tostring(self, v) -> str:
        if v is None:
            return "nil"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, Stack):
            return "\n".join(self.frame(a) for a in v)
        if isinstance(v, Time):
            return v.text()
        if isinstance(v, Agg):
            return f"count={v.count} sum={v.sum} min={v.min} max={v.max} avg={v.avg}"
        if isinstance(v, (int, str)):
            return str(v)
        return "table"

    def frame(self, addr: int) -> str:
        name = self.symbolize(addr)
        width = self.word_size * 2
        return name if name else f"0x{addr & ((1 << (8 * self.word_size)) - 1):0{width}x}"

    # -- printf ----------------------------------------------------------
    def r_printf(self, index: int, values: list) -> str:
        out = []
        it = iter(values)
        for part in self._formats[index]:
            out.append(part if isinstance(part, str) else self.convert(part, next(it, None)))
        return "".join(out)

    def convert(self, c: Conv, v) -> str:
        if c.conv in "sc" or not isinstance(v, int) or isinstance(v, bool):
            if c.conv == "c" and isinstance(v, int) and not isinstance(v, bool):
                text = chr(v & 0xFF)
            else:
                text = self.tostring(v)
                if c.precision is not None and c.conv == "s":
                    text = text[:c.precision]
            return self.pad(text, c, numeric=False)
        u = v & 0xFFFFFFFFFFFFFFFF
        if c.conv in "di":
            digits, sign = str(abs(v)), "-" if v < 0 else ("+" if "+" in c.flags else
                                                          (" " if " " in c.flags else ""))
        elif c.conv == "u":
            digits, sign = str(u), ""
        elif c.conv in "xX":
            digits = format(u, "x" if c.conv == "x" else "X")
            sign = ("0" + c.conv) if "#" in c.flags and u else ""
        elif c.conv == "o":
            digits = format(u, "o")
            sign = "0" if "#" in c.flags and digits != "0" else ""
        else:   # %p: an address of the target's word size
            mask = (1 << (8 * self.word_size)) - 1
            name = self.symbolize(v)
            if name:
                return self.pad(name, c, numeric=False)
            digits, sign = format(v & mask, "x"), "0x"
        if c.precision is not None:
            digits = digits.rjust(c.precision, "0")
        return self.pad(digits, c, numeric=True, sign=sign)

    @staticmethod
    def pad(text: str, c: Conv, numeric: bool, sign: str = "") -> str:
        width = c.width or 0
        body = sign + text
        if len(body) >= width:
            return body
        if "-" in c.flags:
            return body.ljust(width)
        if numeric and "0" in c.flags and c.precision is None:
            return sign + text.rjust(width - len(sign), "0")
        return body.rjust(width)

    # -- print and table dumps -------------------------------------------
    def r_print(self, values: list) -> str:
        return " ".join(self.tostring(v) for v in values) + "\n"

    def key_text(self, k) -> str:
        return self.tostring(k)

    def r_dump(self, snapshot: list) -> str:
        lines = []
        for k, v in snapshot:
            if isinstance(k, Stack):
                lines.append(self.tostring(k))
                lines.append(f"    {self.tostring(v)}")
            else:
                lines.append(f"{self.key_text(k)}\t{self.tostring(v)}")
        return "".join(line + "\n" for line in lines)

    # -- histograms ------------------------------------------------------
    @staticmethod
    def bar(count: int, total: int) -> str:
        n = (count * BAR_WIDTH + total // 2) // total if total else 0
        return "@" * n

    def rows(self, rows: list[tuple[str, int]], label_width: int = 16) -> str:
        total = sum(c for _, c in rows)
        out = [f"{'value':>{label_width}}  {HIST_HEADER} count"]
        for label, count in rows:
            out.append(f"{label:>{label_width}} |{self.bar(count, total):<{BAR_WIDTH}} {count}")
        return "\n".join(out) + "\n"

    def keyed(self, snapshot: list, render_one) -> str:
        parts = []
        for k, agg in snapshot:
            parts.append(f"{self.key_text(k)}\n" + render_one(agg))
        return "\n".join(parts)

    def r_hist(self, snapshot: list, desc: int) -> str:
        return self.keyed(snapshot, self.log2_rows)

    def log2_rows(self, agg: Agg) -> str:
        order = sorted(agg.log2)
        if not order:
            return self.rows([])
        lo, hi = order[0], order[-1]
        values = [lo] + self._buckets_between(lo, hi)
        values = [self._prev_bucket(lo)] + values + [self._next_bucket(hi)]
        return self.rows([(str(v), agg.log2.get(v, 0)) for v in values])

    @staticmethod
    def _next_bucket(b: int) -> int:
        if b == 0:
            return 1
        if b == -1:
            return 0
        return b * 2 if b > 0 else b // 2

    @staticmethod
    def _prev_bucket(b: int) -> int:
        if b == 0:
            return -1
        if b == 1:
            return 0
        return b // 2 if b > 0 else b * 2

    def _buckets_between(self, lo: int, hi: int) -> list[int]:
        out, b = [], lo
        while b != hi:
            b = self._next_bucket(b)
            out.append(b)
        return out

    def r_lhist(self, snapshot: list, desc_index: int) -> str:
        d = self.img.tables[desc_index]
        return self.keyed(snapshot, lambda agg: self.linear_rows(agg, d))

    def linear_rows(self, agg: Agg, d: program.TableDesc) -> str:
        n = linear_count(d)
        labels = {-1: f"< {d.lmin}", n: f">= {d.lmax}"}
        used = sorted(agg.linear)
        if not used:
            return self.rows([])
        lo, hi = max(used[0] - 1, -1), min(used[-1] + 1, n)
        rows = []
        for i in range(lo, hi + 1):
            rows.append((labels.get(i, str(d.lmin + i * d.lstep)), agg.linear.get(i, 0)))
        return self.rows(rows)

    def r_print_hist(self, snapshot: list, n: int) -> str:
        counted = [(k, v.count if isinstance(v, Agg) else v) for k, v in snapshot]
        # Stable sort: equal counts keep table order, as on the board.
        counted.sort(key=lambda kv: -kv[1])
        counted = counted[:max(n, 0)]
        total = sum(max(c, 0) for _, c in counted)
        out = [f"{'value':>32}  {HIST_HEADER} count"]
        for k, c in counted:
            bar = self.bar(max(c, 0), total)
            if isinstance(k, Stack):
                out.append(self.tostring(k))
                out.append(f"{'':>32} |{bar:<{BAR_WIDTH}} {c}")
            else:
                out.append(f"{self.key_text(k):>32} |{bar:<{BAR_WIDTH}} {c}")
        return "\n".join(out) + "\n"
