"""Renders a terminal capture with escape codes (`tmux capture-pane -e -p`) to a PNG, so a
screen can be looked at as a picture: python3 scripts/ansi2png.py capture.txt out.png

Understands SGR reset, bold, faint, reverse, 16/256/true colours; draws ▀ as two blocks.
Needs Pillow and the DejaVu Sans Mono font (Debian: python3-pil, fonts-dejavu-core).
"""
import re
import sys

from PIL import Image, ImageDraw, ImageFont

CW, CH = 9, 18
BASE = [(0, 0, 0), (205, 0, 0), (0, 205, 0), (205, 205, 0), (0, 0, 238), (205, 0, 205), (0, 205, 205), (229, 229, 229),
        (127, 127, 127), (255, 0, 0), (0, 255, 0), (255, 255, 0), (92, 92, 255), (255, 0, 255), (0, 255, 255), (255, 255, 255)]
FG, BG = (220, 220, 220), (24, 24, 24)


def xterm(n):
    if n < 16:
        return BASE[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return steps[n // 36], steps[(n // 6) % 6], steps[n % 6]
    v = 8 + 10 * (n - 232)
    return v, v, v


def apply(params, st):
    p = [int(x) if x else 0 for x in params.split(";")] if params else [0]
    i = 0
    while i < len(p):
        c = p[i]
        if c == 0:
            st.update(fg=None, bg=None, bold=False, faint=False, rev=False)
        elif c == 1:
            st["bold"] = True
        elif c == 2:
            st["faint"] = True
        elif c == 22:
            st["bold"] = st["faint"] = False
        elif c == 7:
            st["rev"] = True
        elif c == 27:
            st["rev"] = False
        elif 30 <= c <= 37:
            st["fg"] = BASE[c - 30]
        elif 90 <= c <= 97:
            st["fg"] = BASE[c - 90 + 8]
        elif 40 <= c <= 47:
            st["bg"] = BASE[c - 40]
        elif 100 <= c <= 107:
            st["bg"] = BASE[c - 100 + 8]
        elif c == 39:
            st["fg"] = None
        elif c == 49:
            st["bg"] = None
        elif c in (38, 48) and i + 1 < len(p):
            key = "fg" if c == 38 else "bg"
            if p[i + 1] == 5 and i + 2 < len(p):
                st[key] = xterm(p[i + 2])
                i += 2
            elif p[i + 1] == 2 and i + 4 < len(p):
                st[key] = tuple(p[i + 2:i + 5])
                i += 4
        i += 1


def main():
    text = open(sys.argv[1], encoding="utf-8").read().rstrip("\n").split("\n")
    width = max(1, max(len(re.sub(r"\x1b\[[0-9;]*m", "", l)) for l in text))
    img = Image.new("RGB", (width * CW, len(text) * CH), BG)
    d = ImageDraw.Draw(img)
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf", 14)
    bold = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf", 14)
    for y, line in enumerate(text):
        st = dict(fg=None, bg=None, bold=False, faint=False, rev=False)
        x = 0
        for tok in re.split(r"(\x1b\[[0-9;]*m)", line):
            m = re.fullmatch(r"\x1b\[([0-9;]*)m", tok)
            if m:
                apply(m.group(1), st)
                continue
            for ch in tok:
                fg, bg = st["fg"] or FG, st["bg"] or BG
                if st["rev"]:
                    fg, bg = bg, fg
                if st["faint"]:
                    fg = tuple(v // 2 for v in fg)
                box = (x * CW, y * CH, (x + 1) * CW, (y + 1) * CH)
                if ch == "▀":
                    d.rectangle((box[0], box[1], box[2] - 1, box[1] + CH // 2 - 1), fill=fg)
                    d.rectangle((box[0], box[1] + CH // 2, box[2] - 1, box[3] - 1), fill=bg)
                else:
                    d.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=bg)
                    if ch != " ":
                        d.text((box[0], box[1] + 1), ch, font=bold if st["bold"] else font, fill=fg)
                x += 1
    img.save(sys.argv[2])


if __name__ == "__main__":
    main()
