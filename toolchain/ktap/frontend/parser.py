"""Recursive-descent parser. Each parse function carries its grammar rule."""
from __future__ import annotations

from ktap.frontend import ast as A
from ktap.core.diagnostics import Source, SyntaxErr
from ktap.frontend.lexer import INT64_MAX, Lexer, Token

ASSIGN_OPS = ("=", "+=", "-=", "<<<")

# Binary operator precedence, lowest first. `..` is right-associative.
PRECEDENCE = [
    ("||",),
    ("&&",),
    ("==", "!=", "<", "<=", ">", ">="),
    ("..",),
    ("+", "-"),
    ("*", "/", "%"),
]
RIGHT_ASSOC = {".."}


class Parser:
    def __init__(self, source: Source):
        self.src = source
        self.lex = Lexer(source)
        # Inside a `/filter/`, a bare `/` ends the filter instead of dividing.
        self.slash_ends_filter = False

    # -- helpers ---------------------------------------------------------
    def error(self, msg: str, tok: Token) -> SyntaxErr:
        return SyntaxErr(msg, self.src, tok.loc)

    @staticmethod
    def describe(tok: Token) -> str:
        if tok.kind == "eof":
            return "end of file"
        if tok.kind == "string":
            return "string"
        return f"'{tok.value}'"

    def expect_op(self, op: str, context: str = "") -> Token:
        tok = self.lex.next()
        if not tok.is_op(op):
            where = f" {context}" if context else ""
            raise self.error(f"expected '{op}'{where}, found {self.describe(tok)}", tok)
        return tok

    def expect_name(self, what: str = "a name") -> Token:
        tok = self.lex.next()
        if tok.kind != "name":
            raise self.error(f"expected {what}, found {self.describe(tok)}", tok)
        return tok

    def accept_op(self, op: str) -> bool:
        if self.lex.peek().is_op(op):
            self.lex.next()
            return True
        return False

    def skip_semicolons(self) -> None:
        while self.accept_op(";"):
            pass

    # -- top level -------------------------------------------------------
    def parse_script(self) -> A.Script:
        """script : { toplevel [';'] } EOF"""
        first = self.lex.peek()
        script = A.Script(first.loc)
        self.skip_semicolons()
        while self.lex.peek().kind != "eof":
            script.body.append(self.parse_toplevel())
            self.skip_semicolons()
        return script

    def parse_toplevel(self) -> A.Node:
        """toplevel : function_def | probe | trace_end | timer | limit | statement"""
        tok = self.lex.peek()
        if tok.is_kw("function"):
            return self.parse_function()
        if tok.is_kw("trace"):
            return self.parse_probe()
        if tok.is_kw("trace_end"):
            self.lex.next()
            return A.TraceEnd(tok.loc, self.parse_block())
        if tok.kind == "timer":
            self.lex.next()
            return A.Probe(tok.loc, tok.value, None, self.parse_block(), tok.loc)
        if tok.is_kw("limit"):
            return self.parse_limit()
        return self.parse_statement()

    def parse_function(self) -> A.FunctionDef:
        """function_def : 'function' NAME '(' [NAME {',' NAME}] ')' block"""
        start = self.lex.next()
        name = self.expect_name("a function name")
        self.expect_op("(", "after the function name")
        params = []
        if not self.lex.peek().is_op(")"):
            params.append(self.expect_name("a parameter name").value)
            while self.accept_op(","):
                params.append(self.expect_name("a parameter name").value)
        self.expect_op(")", "after the parameters")
        return A.FunctionDef(start.loc, name.value, params, self.parse_block())

    def parse_probe(self) -> A.Probe:
        """probe : 'trace' SPEC ['/' expr '/'] block"""
        start = self.lex.next()
        spec = self.lex.spec()
        filt = None
        if self.accept_op("/"):
            saved = self.slash_ends_filter
            self.slash_ends_filter = True
            filt = self.parse_expr()
            self.slash_ends_filter = saved
            self.expect_op("/", "to close the filter")
        return A.Probe(start.loc, spec.value, filt, self.parse_block(), spec.loc)

    def parse_limit(self) -> A.Limit:
        """limit : 'limit' NAME '=' NUMBER"""
        start = self.lex.next()
        name = self.expect_name("a limit name")
        self.expect_op("=", "after the limit name")
        tok = self.lex.next()
        if tok.kind != "number":
            raise self.error(f"expected a number, found {self.describe(tok)}", tok)
        return A.Limit(start.loc, name.value, tok.value)

    # -- statements ------------------------------------------------------
    def parse_block(self) -> A.Block:
        """block : '{' { statement [';'] } '}'"""
        start = self.expect_op("{", "to open a block")
        body = []
        self.skip_semicolons()
        while not self.lex.peek().is_op("}"):
            tok = self.lex.peek()
            if tok.kind == "eof":
                raise self.error("unterminated block: expected '}'", tok)
            if tok.is_kw("function", "trace", "trace_end", "limit") or tok.kind == "timer":
                raise self.error(f"'{tok.value}' is only allowed at the top level", tok)
            body.append(self.parse_statement())
            self.skip_semicolons()
        self.lex.next()
        return A.Block(start.loc, body)

    def parse_statement(self) -> A.Node:
        """statement : var_decl | if | while | for | 'break' | return | block
                     | assignment | call"""
        tok = self.lex.peek()
        if tok.is_kw("var"):
            return self.parse_var()
        if tok.is_kw("if"):
            return self.parse_if()
        if tok.is_kw("while"):
            self.lex.next()
            return A.While(tok.loc, self.parse_paren_expr("while"), self.parse_block())
        if tok.is_kw("for"):
            return self.parse_for()
        if tok.is_kw("break"):
            self.lex.next()
            return A.Break(tok.loc)
        if tok.is_kw("return"):
            return self.parse_return()
        if tok.is_op("{"):
            return self.parse_block()
        return self.parse_expr_statement()

    def parse_var(self) -> A.VarDecl:
        """var_decl : 'var' NAME ['=' expr]"""
        start = self.lex.next()
        name = self.expect_name("a variable name after 'var'")
        init = self.parse_expr() if self.accept_op("=") else None
        return A.VarDecl(start.loc, name.value, init)

    def parse_paren_expr(self, what: str) -> A.Node:
        """paren_expr : '(' expr ')'"""
        self.expect_op("(", f"after '{what}'")
        e = self.parse_nested_expr()
        self.expect_op(")", f"to close the '{what}' condition")
        return e

    def parse_if(self) -> A.If:
        """if : 'if' paren_expr block {'elseif' paren_expr block} ['else' block]"""
        start = self.lex.next()
        branches = [(self.parse_paren_expr("if"), self.parse_block())]
        orelse = None
        while True:
            tok = self.lex.peek()
            if tok.is_kw("elseif"):
                self.lex.next()
                branches.append((self.parse_paren_expr("elseif"), self.parse_block()))
            elif tok.is_kw("else"):
                self.lex.next()
                if self.lex.peek().is_kw("if"):
                    orelse = A.Block(tok.loc, [self.parse_if()])
                else:
                    orelse = self.parse_block()
                break
            else:
                break
        return A.If(start.loc, branches, orelse)

    def parse_for(self) -> A.Node:
        """for : 'for' '(' NAME '=' expr ',' expr [',' expr] ')' block
               | 'for' '(' NAME [',' NAME] 'in' 'pairs' '(' expr ')' ')' block"""
        start = self.lex.next()
        self.expect_op("(", "after 'for'")
        first = self.expect_name("a loop variable")
        if self.accept_op("="):
            lo = self.parse_nested_expr()
            self.expect_op(",", "between the loop bounds")
            hi = self.parse_nested_expr()
            step = self.parse_nested_expr() if self.accept_op(",") else None
            self.expect_op(")", "to close the 'for' header")
            return A.NumFor(start.loc, first.value, lo, hi, step, self.parse_block())
        second = None
        if self.accept_op(","):
            second = self.expect_name("a loop variable").value
        tok = self.lex.next()
        if not tok.is_kw("in"):
            raise self.error(f"expected '=' or 'in' in 'for', found {self.describe(tok)}", tok)
        fn = self.expect_name("'pairs'")
        if fn.value != "pairs":
            raise self.error(f"expected 'pairs(...)' after 'in', found '{fn.value}'", fn)
        self.expect_op("(", "after 'pairs'")
        table = self.parse_nested_expr()
        self.expect_op(")", "to close 'pairs('")
        self.expect_op(")", "to close the 'for' header")
        return A.PairsFor(start.loc, first.value, second, table, self.parse_block())

    def parse_return(self) -> A.Return:
        """return : 'return' [expr]"""
        start = self.lex.next()
        tok = self.lex.peek()
        if tok.is_op("}", ";") or tok.kind == "eof":
            return A.Return(start.loc, None)
        return A.Return(start.loc, self.parse_expr())

    def parse_expr_statement(self) -> A.Node:
        """assignment : lvalue ('=' | '+=' | '-=' | '<<<') expr
           call       : NAME '(' args ')'"""
        start = self.lex.peek()
        e = self.parse_expr()
        tok = self.lex.peek()
        if tok.kind == "op" and tok.value in ASSIGN_OPS:
            if not isinstance(e, (A.Name, A.Index, A.Field)):
                raise self.error("cannot assign to this expression", start)
            self.lex.next()
            return A.Assign(tok.loc, e, tok.value, self.parse_expr())
        if isinstance(e, A.Call):
            return A.ExprStmt(start.loc, e)
        raise self.error("expected a statement (an assignment or a function call)", start)

    # -- expressions -----------------------------------------------------
    def parse_nested_expr(self) -> A.Node:
        saved = self.slash_ends_filter
        self.slash_ends_filter = False
        try:
            return self.parse_expr()
        finally:
            self.slash_ends_filter = saved

    def parse_expr(self, level: int = 0) -> A.Node:
        """expr : unary { binop unary }   (precedence climbing over PRECEDENCE)"""
        if level == len(PRECEDENCE):
            return self.parse_unary()
        left = self.parse_expr(level + 1)
        ops = PRECEDENCE[level]
        while True:
            tok = self.lex.peek()
            if not (tok.kind == "op" and tok.value in ops):
                return left
            if tok.value == "/" and self.slash_ends_filter:
                return left
            self.lex.next()
            if tok.value in RIGHT_ASSOC:
                right = self.parse_expr(level)
            else:
                right = self.parse_expr(level + 1)
            left = A.Binary(tok.loc, tok.value, left, right)

    def parse_unary(self) -> A.Node:
        """unary : ('-' | '!') unary | postfix"""
        tok = self.lex.peek()
        if tok.is_op("-", "!"):
            self.lex.next()
            nxt = self.lex.peek()
            if tok.value == "-" and nxt.kind == "number":
                self.lex.next()
                return self.parse_postfix(A.Number(tok.loc, self._negate(nxt)))
            return A.Unary(tok.loc, tok.value, self.parse_unary())
        return self.parse_postfix(self.parse_primary())

    def _negate(self, tok: Token) -> int:
        v = -tok.value
        if v < -INT64_MAX - 1:
            v += 1 << 64
        return v

    def parse_postfix(self, e: A.Node) -> A.Node:
        """postfix : primary { '[' expr ']' | '.' NAME }"""
        while True:
            tok = self.lex.peek()
            if tok.is_op("["):
                self.lex.next()
                key = self.parse_nested_expr()
                self.expect_op("]", "to close the index")
                e = A.Index(tok.loc, e, key)
            elif tok.is_op("."):
                self.lex.next()
                name = self.expect_name("a field name after '.'")
                e = A.Field(tok.loc, e, name.value)
            else:
                return e

    def parse_primary(self) -> A.Node:
        """primary : NUMBER | STRING | 'nil' | 'true' | 'false' | NAME | call
                   | '(' expr ')' | table"""
        tok = self.lex.next()
        if tok.kind == "number":
            if tok.value > INT64_MAX:
                raise self.error(f"integer literal {tok.value} does not fit in 64 bits", tok)
            return A.Number(tok.loc, tok.value)
        if tok.kind == "string":
            return A.String(tok.loc, tok.value)
        if tok.is_kw("nil"):
            return A.Nil(tok.loc)
        if tok.is_kw("true", "false"):
            return A.Bool(tok.loc, tok.value == "true")
        if tok.kind == "name":
            if self.lex.peek().is_op("("):
                return self.parse_call(tok)
            return A.Name(tok.loc, tok.value)
        if tok.is_op("("):
            e = self.parse_nested_expr()
            self.expect_op(")", "to close the parenthesis")
            return e
        if tok.is_op("{"):
            return self.parse_table(tok)
        raise self.error(f"expected an expression, found {self.describe(tok)}", tok)

    def parse_call(self, name: Token) -> A.Call:
        """call : NAME '(' [expr {',' expr}] ')'"""
        self.lex.next()
        args = []
        if not self.lex.peek().is_op(")"):
            args.append(self.parse_nested_expr())
            while self.accept_op(","):
                args.append(self.parse_nested_expr())
        self.expect_op(")", f"to close the call to '{name.value}'")
        return A.Call(name.loc, name.value, args)

    def parse_table(self, start: Token) -> A.TableCons:
        """table : '{' [item {',' item} [',']] '}'
           item  : NAME '=' expr | '[' expr ']' '=' expr | expr"""
        items: list[tuple[A.Node | None, A.Node]] = []
        while not self.lex.peek().is_op("}"):
            tok = self.lex.peek()
            if tok.is_op("["):
                self.lex.next()
                key = self.parse_nested_expr()
                self.expect_op("]", "to close the key")
                self.expect_op("=", "after the key")
                items.append((key, self.parse_nested_expr()))
            else:
                value = self.parse_nested_expr()
                if isinstance(value, A.Name) and self.accept_op("="):
                    items.append((A.String(value.loc, value.name), self.parse_nested_expr()))
                else:
                    items.append((None, value))
            if not self.accept_op(","):
                break
        self.expect_op("}", "to close the table")
        return A.TableCons(start.loc, items)


def parse(source: Source) -> A.Script:
    return Parser(source).parse_script()
