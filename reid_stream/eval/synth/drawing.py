"""Drawing one person: an articulated, shaded figure in a given view and point of its stride, as premultiplied RGBA.

Views: front, back, left, right (profile), front_left, front_right, back_left, back_right (three-quarter). PIL draws
without anti-aliasing, so the figure is drawn supersampled and box-reduced, then lit from above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw


def _limb(p0: tuple[float, float], p1: tuple[float, float], w0: float, w1: float) -> list[tuple[float, float]]:
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    n = math.hypot(dx, dy) or 1e-6
    nx, ny = -dy / n, dx / n
    return [(p0[0] + nx * w0 / 2, p0[1] + ny * w0 / 2), (p1[0] + nx * w1 / 2, p1[1] + ny * w1 / 2),
            (p1[0] - nx * w1 / 2, p1[1] - ny * w1 / 2), (p0[0] - nx * w0 / 2, p0[1] - ny * w0 / 2)]


def _toward(p: tuple[float, float], angle: float, length: float) -> tuple[float, float]:
    """The point `length` away from p; angle 0 points down, positive angles point forward (+x)."""
    return p[0] + math.sin(angle) * length, p[1] + math.cos(angle) * length


def _shade(rgb: Sequence[int], f: float) -> tuple[int, int, int, int]:
    r, g, b = (min(255, max(0, int(c * f))) for c in rgb)
    return r, g, b, 255


class _Figure:
    """Draws one person on a supersampled RGBA canvas. Body coordinates: x in body heights from the centre line
    (+x = the person's left in front view, forward in side view), y in body heights from the top of the head."""

    def __init__(self, attrs: dict, scale: float):
        self.a = attrs
        self.s = scale
        self.w = int(0.9 * scale)
        self.h = int(1.08 * scale)
        self.cx = self.w / 2
        self.top = 0.04 * scale
        self.img = Image.new("RGBA", (self.w, self.h), (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.img)
        self._pattern: Image.Image | None = None

    def at(self, p: tuple[float, float]) -> tuple[float, float]:
        """Canvas pixels of a point in body coordinates."""
        return self.cx + p[0] * self.s, self.top + p[1] * self.s

    def _masked(self, fill: Image.Image, box: tuple[float, float, float, float], shape) -> None:
        """Paste the patterned `fill` through a mask that `shape(draw, dx, dy)` draws, inside `box` only."""
        x0, y0 = max(0, int(box[0]) - 1), max(0, int(box[1]) - 1)
        x1, y1 = min(self.w, int(box[2]) + 2), min(self.h, int(box[3]) + 2)
        if x1 <= x0 or y1 <= y0:
            return
        mask = Image.new("L", (x1 - x0, y1 - y0), 0)
        shape(ImageDraw.Draw(mask), x0, y0)
        self.img.paste(fill.crop((x0, y0, x1, y1)), (x0, y0), mask)

    def poly(self, pts: Sequence[tuple[float, float]], fill, outline: float | None = 0.7) -> None:
        """A polygon in a colour (RGBA tuple) or a pattern (image), outlined a little darker."""
        pix = [self.at(p) for p in pts]
        if isinstance(fill, Image.Image):
            xs, ys = [p[0] for p in pix], [p[1] for p in pix]
            self._masked(fill, (min(xs), min(ys), max(xs), max(ys)),
                         lambda d, dx, dy: d.polygon([(x - dx, y - dy) for x, y in pix], fill=255))
            base = self.a["upper_color"]
        else:
            self.draw.polygon(pix, fill=fill)
            base = fill[:3]
        if outline is not None:
            self.draw.line([*pix, pix[0]], fill=_shade(base, outline), width=max(1, round(self.s / 160)))

    def ellipse(self, c: tuple[float, float], rx: float, ry: float, fill) -> None:
        x, y = self.at(c)
        box = (x - rx * self.s, y - ry * self.s, x + rx * self.s, y + ry * self.s)
        if isinstance(fill, Image.Image):
            self._masked(fill, box, lambda d, dx, dy: d.ellipse((box[0] - dx, box[1] - dy, box[2] - dx, box[3] - dy),
                                                                fill=255))
        else:
            self.draw.ellipse(box, fill=fill)

    def segment(self, p0, p1, w0: float, w1: float, fill, outline: float | None = 0.7) -> None:
        """A limb from p0 to p1, w0 and w1 wide there, with a rounded joint at p1."""
        self.poly(_limb(p0, p1, w0, w1), fill, outline)
        self.ellipse(p1, w1 / 2, w1 / 2, fill)

    def pattern(self) -> Image.Image | tuple:
        """The upper garment's fill: a colour, or an image with stripes or checks in body coordinates."""
        a = self.a
        kind = a["upper_pattern"]
        if kind in ("solid", "logo"):
            return _shade(a["upper_color"], 1.0)
        if self._pattern is None:
            base, second = _shade(a["upper_color"], 1.0), _shade(a["pattern_color"], 1.0)
            img = Image.new("RGBA", (self.w, self.h), base)
            d = ImageDraw.Draw(img)
            if kind == "hstripes":
                period = 0.045 * self.s
                for i in range(int(self.h / period) + 1):
                    y = self.top + i * period
                    d.rectangle((0, y, self.w, y + 0.4 * period), fill=second)
            elif kind == "vstripes":
                period = 0.04 * self.s
                for i in range(-int(self.w / period) - 1, int(self.w / period) + 1):
                    x = self.cx + (i - 0.25) * period
                    d.rectangle((x, 0, x + 0.4 * period, self.h), fill=second)
            else:  # checks: a plaid, bands both ways in a mixed colour, crossings in the second colour
                period = 0.07 * self.s
                mixed = tuple(round(0.45 * b + 0.55 * c) for b, c in zip(base, second, strict=True))
                bu = ((np.arange(self.w) - self.cx) / period) % 1.0 < 0.35
                bv = ((np.arange(self.h) - self.top) / period) % 1.0 < 0.35
                palette = np.array([base, mixed, second], np.uint8)
                img = Image.fromarray(palette[bv[:, None].astype(np.uint8) + bu[None, :]], "RGBA")
            self._pattern = img
        return self._pattern


def _draw_person(attrs: dict, view: str, phase: float, height_px: float, swing: float) -> tuple[Image.Image, float]:
    """The person as a PREMULTIPLIED RGBA image and the feet's y in it (the feet are at the centre column)."""
    ss = 3 if height_px < 80 else 2  # supersampling: PIL draws without anti-aliasing
    f = _Figure(attrs, height_px * ss)
    a = attrs
    b = a["build"] * 1.1  # clothed widths
    skin, hair = a["skin"], a["hair_color"]
    lower, acc = a["lower_color"], a["accessory_color"]
    side = view in ("left", "right")
    upper_fill = f.pattern()
    bob = 0.008 * abs(math.cos(phase))  # the body is lowest at mid-stride
    head_c = (0.0, 0.068 + bob)
    shoulder_y, waist_y, hip_y = 0.19 + bob, 0.44 + bob, 0.5 + bob
    knee_len, shin_len = 0.235, 0.225
    rx, ry = (0.056 if side else 0.052), 0.066

    def shoes(ankle: tuple[float, float], forward: float, color, far: bool = False) -> None:
        col = _shade(color, 0.7 if far else 1.0)
        if side:
            heel, toe = (ankle[0] - 0.025, ankle[1] + 0.005), (ankle[0] + forward, ankle[1] + 0.01)
            f.poly([(heel[0], heel[1] - 0.02), (toe[0] - 0.01, toe[1] - 0.022), (toe[0] + 0.01, toe[1] + 0.012),
                    (heel[0], heel[1] + 0.014)], col)
        else:
            f.ellipse((ankle[0], ankle[1] + 0.012), 0.028, 0.018, col)

    def leg(hip: tuple[float, float], thigh_a: float, shin_a: float, far: bool) -> None:
        dim = 0.72 if far else 1.0  # the far side of the body is in shadow
        knee = _toward(hip, thigh_a, knee_len)
        ankle = _toward(knee, shin_a, shin_len)
        kind = a["lower_type"]
        leg_skin = _shade(skin, dim)
        thigh_col = _shade(lower, dim) if kind in ("trousers", "shorts") else leg_skin
        shin_col = _shade(lower, dim) if kind == "trousers" else leg_skin
        if kind == "shorts":
            mid = (hip[0] + (knee[0] - hip[0]) * 0.55, hip[1] + (knee[1] - hip[1]) * 0.55)
            f.segment(hip, knee, 0.085 * b, 0.055 * b, leg_skin)
            f.segment(hip, mid, 0.092 * b, 0.075 * b, thigh_col)
        else:
            f.segment(hip, knee, 0.085 * b, 0.058 * b, thigh_col)
        f.segment(knee, ankle, 0.058 * b if kind == "trousers" else 0.05 * b, 0.042 * b, shin_col)
        shoes(ankle, 0.065 if side else 0.0, a["shoe_color"], far)

    def arm(shoulder: tuple[float, float], upper_a: float, fore_a: float, far: bool) -> None:
        dim = 0.72 if far else 1.0
        elbow = _toward(shoulder, upper_a, 0.175)
        wrist = _toward(elbow, fore_a, 0.15)
        sleeve = upper_fill if not far else _shade(a["upper_color"], dim)
        arm_skin = _shade(skin, dim)
        if a["sleeves"] == "long":
            f.segment(shoulder, elbow, 0.06 * b, 0.05 * b, sleeve)
            f.segment(elbow, wrist, 0.05 * b, 0.04 * b, sleeve)
        else:
            mid = (shoulder[0] + (elbow[0] - shoulder[0]) * 0.6, shoulder[1] + (elbow[1] - shoulder[1]) * 0.6)
            f.segment(shoulder, elbow, 0.05 * b, 0.042 * b, arm_skin)
            f.segment(elbow, wrist, 0.042 * b, 0.036 * b, arm_skin)
            f.segment(shoulder, mid, 0.064 * b, 0.058 * b, sleeve)
        f.ellipse(_toward(wrist, fore_a, 0.018), 0.021 * b, 0.024, arm_skin)

    def long_hair_behind() -> None:
        if a["hair_length"] == "long":
            f.poly([(-rx * 1.15, head_c[1] - 0.01), (rx * 1.15, head_c[1] - 0.01), (rx * 1.35, 0.3 + bob),
                    (-rx * 1.35, 0.3 + bob)], _shade(hair, 0.85))

    def skirt(half_top: float, half_bottom: float) -> None:
        if a["lower_type"] == "skirt":
            f.poly([(-half_top, waist_y), (half_top, waist_y), (half_bottom, 0.7 + bob), (-half_bottom, 0.7 + bob)],
                   _shade(lower, 1.0))

    def head_and_hair(facing: str, turn: float = 0.0) -> None:
        f.poly(_limb((0.0, 0.1 + bob), (0.0, shoulder_y + 0.01), 0.04, 0.045), _shade(skin, 0.9), None)
        f.ellipse(head_c, rx, ry, _shade(skin, 1.0))
        hcol = _shade(hair, 1.0)
        hx, hy = head_c
        length = a["hair_length"]
        if facing == "front":
            f.ellipse((hx - 0.3 * turn * rx, hy - 0.026), rx * 1.06, ry * 0.62, hcol)  # crown and fringe
            if length != "short":
                for sgn in (-1, 1):
                    f.poly([(sgn * rx * 0.75, hy - 0.02), (sgn * rx * 1.12, hy - 0.02),
                            (sgn * rx * 1.1, hy + (0.05 if length == "medium" else 0.09)),
                            (sgn * rx * 0.85, hy + 0.045)], hcol, None)
            eye = _shade(skin, 0.35)
            for sgn in (-1, 1):
                f.ellipse((hx + (sgn * 0.4 + 0.5 * turn) * rx, hy + 0.004), 0.006, 0.005, eye)
            f.ellipse((hx + 0.5 * turn * rx, hy + 0.034), 0.012, 0.004, _shade(skin, 0.6))
        elif facing == "back":
            f.ellipse((hx - 0.3 * turn * rx, hy - 0.004), rx * 1.07, ry * 1.02, hcol)  # turned: a cheek shows
            if length != "short":
                low = 0.135 if length == "medium" else 0.3
                f.poly([(-rx * 1.05, hy), (rx * 1.05, hy), (rx * (0.95 if length == "medium" else 1.3), low + bob),
                        (-rx * (0.95 if length == "medium" else 1.3), low + bob)], hcol, None)
        else:  # side, facing +x
            f.ellipse((hx + rx * 0.85, hy + 0.012), 0.012, 0.012, _shade(skin, 1.0))  # nose
            f.poly([(hx - rx * 1.08, hy + 0.03), (hx - rx * 1.02, hy - ry * 0.7), (hx, hy - ry * 1.06),
                    (hx + rx * 0.9, hy - ry * 0.72), (hx + rx * 0.55, hy - ry * 0.35), (hx, hy - ry * 0.2),
                    (hx - rx * 0.1, hy + 0.02), (hx - rx * 0.4, hy + 0.05)], hcol, None)
            if length != "short":
                low = 0.13 if length == "medium" else 0.29
                f.poly([(hx - rx * 1.08, hy - 0.01), (hx - rx * 0.2, hy + 0.01), (hx - rx * 0.3, low + bob),
                        (hx - rx * 1.25, low + bob - 0.01)], hcol, None)
            f.ellipse((hx + rx * 0.5, hy), 0.006, 0.005, _shade(skin, 0.35))
        if a["accessory"] == "hat":
            hat = _shade(acc, 1.0)
            f.poly([(hx - rx * 1.1, hy - 0.02), (hx - rx * 0.9, hy - ry * 0.85), (hx, hy - ry * 1.18),
                    (hx + rx * 0.9, hy - ry * 0.85), (hx + rx * 1.1, hy - 0.02)], hat)
            if facing == "front":
                f.ellipse((hx, hy - 0.02), rx * 1.15, 0.01, _shade(acc, 0.7))
            elif facing == "side":
                f.poly([(hx + rx * 0.8, hy - 0.03), (hx + rx * 1.9, hy - 0.018), (hx + rx * 1.9, hy - 0.008),
                        (hx + rx * 0.8, hy - 0.012)], _shade(acc, 0.75))

    if side:
        phi = math.sin(phase)
        amp = 0.42 * swing
        depth_chest, depth_waist = 0.068 * b, 0.062 * b
        lean = 0.012
        shoulder = (0.006, shoulder_y + 0.012)
        hip = (0.0, hip_y)

        def leg_angles(sign: int) -> tuple[float, float]:  # the knee flexes most while the leg swings forward
            thigh = amp * sign * phi
            flex = 0.08 + 0.55 * max(0.0, -math.sin(phase + (0 if sign > 0 else math.pi) + 0.9))
            return thigh, thigh - flex

        far_s, near_s = -phi, phi
        arm(shoulder, -0.8 * amp * far_s, -0.8 * amp * far_s + 0.35, far=True)
        leg(hip, *leg_angles(-1), far=True)
        leg(hip, *leg_angles(1), far=False)
        skirt(depth_waist * 1.05, depth_waist * 1.8)
        f.poly([(-depth_chest * 0.9 + lean, shoulder_y - 0.005), (depth_chest * 0.7 + lean, shoulder_y - 0.01),
                (depth_chest * 1.05 + lean, 0.3 + bob), (depth_waist * 1.0, waist_y), (depth_waist * 1.1, 0.53 + bob),
                (-depth_waist * 1.15, 0.53 + bob), (-depth_waist * 1.05, waist_y), (-depth_chest * 1.0, 0.3 + bob)],
               upper_fill)
        if a["accessory"] == "backpack":
            x0 = -depth_chest * 0.95
            f.poly([(x0 + 0.01, shoulder_y + 0.02), (x0 - 0.07, shoulder_y + 0.035), (x0 - 0.08, 0.43 + bob),
                    (x0 + 0.005, 0.44 + bob)], _shade(acc, 1.0))
            f.poly(_limb((x0 + 0.005, shoulder_y + 0.02), (depth_chest * 0.4, shoulder_y + 0.01), 0.015, 0.015),
                   _shade(acc, 0.7), None)
        if a["accessory"] == "shoulder_bag":
            f.poly(_limb((depth_chest * 0.6, shoulder_y + 0.005), (-depth_waist * 0.4, 0.47 + bob), 0.012, 0.012),
                   _shade(acc, 0.6), None)
        arm(shoulder, -0.8 * amp * near_s, -0.8 * amp * near_s + 0.35, far=False)
        if a["accessory"] == "shoulder_bag":
            f.poly([(-0.06, 0.45 + bob), (0.045, 0.45 + bob), (0.05, 0.56 + bob), (-0.055, 0.56 + bob)],
                   _shade(acc, 1.0))
        head_and_hair("side")
    else:  # front or back, squarely (turn 0) or three-quarter (turn 0.5, facing +x)
        front = view.startswith("front")
        turn = 0.5 if "_" in view else 0.0
        narrow = 1 - 0.3 * turn
        sw, ww, hw = 0.11 * b * narrow, 0.084 * b * narrow, 0.092 * b * (1 - 0.2 * turn)
        phi = math.sin(phase)
        amp = 0.3 * swing
        if front:
            long_hair_behind()

        def arm_at(sgn: int, far: bool) -> None:
            s_arm = sgn * phi
            square_a = sgn * 0.1 * (1 - turn)
            swing_a = -turn * 1.4 * amp * (phi if sgn < 0 else -phi)  # forward is +x when turned
            arm((sgn * (sw - 0.012), shoulder_y + 0.018), square_a + swing_a,
                square_a + swing_a + sgn * 0.06 * (1 - turn) + 0.08 * max(0.0, s_arm) * (1 - turn) + 0.3 * turn,
                far=far)

        if turn:  # the far arm, partly behind the body
            arm_at(1, far=True)
        for sgn in (-1, 1):  # legs: squarely the stepping leg swings a little; turned, they stride
            step = sgn * phi
            if turn:
                thigh = turn * 1.6 * amp * step
                shin = thigh - (0.08 + 0.45 * max(0.0, -step)) * turn * 2
            else:
                thigh = -sgn * 0.025 + 0.04 * step
                shin = thigh * 0.4 - 0.05 * max(0.0, -step)
            leg((sgn * 0.045 * b * narrow, hip_y), thigh, shin, far=turn > 0 and sgn > 0)
        skirt(ww * 1.05, hw * 1.45)
        if turn and a["accessory"] == "backpack" and front:  # its side shows behind the back
            f.poly([(-sw - 0.045, shoulder_y + 0.04), (-sw + 0.02, shoulder_y + 0.03), (-sw + 0.02, 0.44 + bob),
                    (-sw - 0.05, 0.43 + bob)], _shade(acc, 0.85))
        f.poly([(-sw, shoulder_y), (sw, shoulder_y), (sw * 0.98, 0.3 + bob), (ww, waist_y), (hw, 0.53 + bob),
                (-hw, 0.53 + bob), (-ww, waist_y), (-sw * 0.98, 0.3 + bob)], upper_fill)
        for sgn in (-1, 1):
            f.ellipse((sgn * (sw - 0.022), shoulder_y + 0.02), 0.026 * b, 0.022, _shade(a["upper_color"], 1.0))
        if front and a["upper_pattern"] == "logo":
            pc = _shade(a["pattern_color"], 1.0)
            lx = 0.025 * b + 0.04 * turn
            f.ellipse((lx, 0.27 + bob), 0.026 * narrow, 0.026, pc)
            f.poly([(lx - 0.055 * narrow, 0.31 + bob), (lx + 0.025, 0.31 + bob), (lx + 0.025, 0.325 + bob),
                    (lx - 0.055 * narrow, 0.325 + bob)], pc, None)
        bag_side = 1 if front else -1
        if a["accessory"] == "shoulder_bag":
            f.poly(_limb((-bag_side * sw * 0.75, shoulder_y + 0.005), (bag_side * hw * 1.05, 0.46 + bob), 0.014,
                         0.014), _shade(acc, 0.6), None)
        if a["accessory"] == "backpack":
            if front:
                for sgn in (-1, 1):
                    f.poly(_limb((sgn * sw * 0.55, shoulder_y), (sgn * sw * 0.62, 0.33 + bob), 0.018, 0.016),
                           _shade(acc, 0.65), None)
            else:
                dx = -0.03 * turn
                f.poly([(-sw * 0.78 + dx, shoulder_y + 0.03), (sw * 0.78 + dx, shoulder_y + 0.03),
                        (sw * 0.82 + dx, 0.44 + bob), (-sw * 0.82 + dx, 0.44 + bob)], _shade(acc, 1.0))
                f.poly([(-sw * 0.5 + dx, 0.35 + bob), (sw * 0.5 + dx, 0.35 + bob), (sw * 0.5 + dx, 0.42 + bob),
                        (-sw * 0.5 + dx, 0.42 + bob)], _shade(acc, 0.8))
        arm_at(-1, far=False)
        if not turn:
            arm_at(1, far=False)
        if a["accessory"] == "shoulder_bag":
            x = bag_side * (hw + 0.035)
            f.poly([(x - 0.035, 0.45 + bob), (x + 0.035, 0.45 + bob), (x + 0.038, 0.56 + bob), (x - 0.038, 0.56 + bob)],
                   _shade(acc, 1.0))
        head_and_hair("front" if front else "back", turn)
    # Every canvas pixel is opaque or (0, 0, 0, 0) (PIL draws without anti-aliasing), so the box-filtered
    # reduction is the premultiplied-alpha image: antialiased edges without dark fringes.
    small = _lit(f.img.reduce(ss), f.cx / ss, f.top / ss, f.s / ss)
    if view.endswith("left"):
        small = small.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return small, (f.top + f.s) / ss


def _lit(img: Image.Image, cx: float, top: float, scale: float) -> Image.Image:
    """Soft light from above and a rounded body: darker towards the sides and the feet."""
    arr = np.asarray(img).astype(np.float32)
    u = (np.arange(img.width, dtype=np.float32) - cx) / (0.2 * scale)
    v = (np.arange(img.height, dtype=np.float32) - top) / scale
    light = (1.06 - 0.12 * v)[:, None] * (1.0 - 0.18 * np.clip(u * u, 0, 1.6))[None, :]
    arr[..., :3] *= light[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGBA")
