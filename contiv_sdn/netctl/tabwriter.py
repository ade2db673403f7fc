"""Go's text/tabwriter, so that netctl's tables line up exactly as Contiv's did.

Contiv printed every table through ``tabwriter.NewWriter(os.Stdout, 0, 2, 2,
' ', 0)``. Its alignment rule is not "pad every column to its widest cell":
a column is aligned only over a *block* of consecutive lines that all have a
tab-terminated cell in that column, the text after a line's last tab is never
padded, and padding is added after every tab-terminated cell (so rows carry
trailing spaces). Scripts that cut columns out of netctl's output depend on
that, so the algorithm below is Go's ``Writer.format``, transcribed.
"""

from __future__ import annotations

from typing import Sequence


def tabwrite(text: str, minwidth: int = 0, tabwidth: int = 8, padding: int = 1,
             padchar: str = " ") -> str:
    """Format ``text`` (tab-separated cells, newline-terminated lines) as Go's
    tabwriter with flags 0 would, and return the result."""
    raw = text.split("\n")
    partial = raw.pop()
    lines: list[list[str]] = [line.split("\t") for line in raw]
    has_partial = partial != ""
    if has_partial:
        lines.append(partial.split("\t"))
    writer = _Formatter(lines, minwidth, tabwidth, padding, padchar, has_partial)
    writer.format(0, len(lines))
    return "".join(writer.out)


class _Formatter:
    def __init__(self, lines: Sequence[list[str]], minwidth: int, tabwidth: int,
                 padding: int, padchar: str, has_partial: bool):
        self.lines = lines
        self.minwidth = minwidth
        self.tabwidth = tabwidth
        self.padding = padding
        self.padchar = padchar
        self.has_partial = has_partial
        self.widths: list[int] = []
        self.out: list[str] = []

    def format(self, line0: int, line1: int) -> None:
        column = len(self.widths)
        this = line0
        while this < line1:
            line = self.lines[this]
            if column >= len(line) - 1:
                this += 1
                continue
            # A cell exists in this column: the lines before it are done.
            self.write_lines(line0, this)
            line0 = this
            width = self.minwidth
            while this < line1:
                line = self.lines[this]
                if column >= len(line) - 1:
                    break
                width = max(width, len(line[column]) + self.padding)
                this += 1
            self.widths.append(width)
            self.format(line0, this)
            self.widths.pop()
            line0 = this
        self.write_lines(line0, line1)

    def write_lines(self, line0: int, line1: int) -> None:
        for index in range(line0, line1):
            line = self.lines[index]
            for j, cell in enumerate(line):
                self.out.append(cell)
                if j < len(self.widths):
                    self.pad(len(cell), self.widths[j])
            last = index + 1 == len(self.lines)
            if not (last and self.has_partial):
                self.out.append("\n")

    def pad(self, textw: int, cellw: int) -> None:
        if self.padchar == "\t":
            if self.tabwidth == 0:
                return
            cellw = (cellw + self.tabwidth - 1) // self.tabwidth * self.tabwidth
            self.out.append("\t" * ((cellw - textw + self.tabwidth - 1) // self.tabwidth))
            return
        self.out.append(self.padchar * (cellw - textw))
