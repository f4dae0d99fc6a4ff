"""The built-ins that take a whole table (builtins.TABLE_CALLS but print):
histograms, print_hist, zero and stats, with the semantics kmod's
ktap_builtin.c keeps. A mixin of vm.Machine, which provides table(), error()
and emit()."""
from __future__ import annotations

from ktap.frontend import program
from ktap.refvm.values import Agg, Table, type_name


class TableBuiltins:
    def table_of(self, args, f, pc, name: str, kinds, what: str) -> Table:
        """args[0] as a table whose entries are all `kinds`, else the runtime error."""
        t = self.table(args[0], f, pc)
        for _, v in t.items():
            if not isinstance(v, kinds) or isinstance(v, bool):
                raise self.error(f"{name}() needs {what}, found a {type_name(v)} entry", f, pc)
        return t

    def histogram(self, kind: str, flag: int, args, f, pc):
        t = self.table(args[0], f, pc)
        if not t.desc.flags & flag:
            raise self.error(f"{kind}() on a table not declared for it", f, pc)
        t = self.table_of(args, f, pc, kind, Agg, "a table fed with <<<")
        self.emit((kind, t.snapshot(), t.desc_index))

    def b_hist(self, args, f, pc):
        self.histogram("hist", program.TABLE_LOG2, args, f, pc)

    def b_lhist(self, args, f, pc):
        self.histogram("lhist", program.TABLE_LINEAR, args, f, pc)

    def b_print_hist(self, args, f, pc):
        self.table(args[0], f, pc)
        n = args[1] if len(args) > 1 else 20
        if not isinstance(n, int) or isinstance(n, bool):
            raise self.error(f"print_hist's count must be a number, got a {type_name(n)}", f, pc)
        t = self.table_of(args, f, pc, "print_hist", (int, Agg), "numbers or aggregates")
        self.emit(("print_hist", t.snapshot(), n))

    def b_zero(self, args, f, pc):
        self.table_of(args, f, pc, "zero", (int, Agg), "numbers or aggregates").zero()

    def b_stats(self, args, f, pc):
        t = self.table_of(args, f, pc, "stats", Agg, "a table fed with <<<")
        self.emit(("dump", t.snapshot()))
