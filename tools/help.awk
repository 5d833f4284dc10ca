# `make help`: one entry per `target: ... ## description` line of the Makefile, the description wrapped to
# 80 columns under itself, so the list reads on a narrow terminal.
BEGIN { FS = ":.*## "; width = 80; indent = 19 }
/^[a-zA-Z0-9_-]+:.*## / {
    line = sprintf("  make %-12s", $1)
    column = length(line)
    count = split($2, words, " ")
    for (i = 1; i <= count; i++) {
        if (column > indent && column + 1 + length(words[i]) > width) {
            print line
            line = sprintf("%" indent "s", "")
            column = indent
        }
        line = line " " words[i]
        column += 1 + length(words[i])
    }
    print line
}
