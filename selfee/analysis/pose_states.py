"""Per-frame courtship states of a fly pair derived from pose (SLEAP analysis HDF5), for k-NN checks.

Not human labels: simple, documented rules on predicted key points (docs/analysis.md gives the
derivation). Per frame, for the male (the fly that extends a wing more often):

* wing angle: the larger, over both wings, of the angle between thorax->wing tip and the
  backward body axis head->abdomen (folded wings lie along it; unilateral extension during
  courtship song raises one to ~60-90 degrees);
* distance: thorax-to-thorax distance in male body lengths (median head-abdomen length);
* speed: male thorax speed in body lengths per second;
* facing: angle between the male's heading (abdomen->head) and the direction to the female.

States, first match wins: ``wing_extension`` (wing angle >= wing_angle_deg), ``following``
(distance <= near_bl, speed >= follow_speed, facing <= facing_deg), ``close`` (distance <= near_bl),
``apart``. Frames whose key points are missing (after filling gaps of up to ``max_gap`` frames)
get no state.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from selfee._deps import require
from selfee.analysis import io, plots
from selfee.analysis.temporal import check_window, sliding_mode, window_mean
from selfee.errors import SelfeeError

log = logging.getLogger("selfee")

STATES = ("wing_extension", "following", "close", "apart")
NODES = ("head", "thorax", "abdomen", "wingL", "wingR")


@dataclass(frozen=True)
class PoseStateOptions:
    fps: float = 25.0
    male: str = "auto"  # auto | a track name (track_0) | a track index (0)
    wing_angle_deg: float = 35.0
    near_bl: float = 3.0  # "close" when the thoraxes are at most this many male body lengths apart
    follow_speed: float = 1.0  # male body lengths per second
    facing_deg: float = 60.0
    max_gap: int = 5  # missing key points over at most this many frames are interpolated linearly
    smooth: int = 5  # frames of the median filter on the per-frame measures (odd)
    min_bout: int = 5  # frames of the sliding mode on the state sequence (odd; 1 = none)

    def __post_init__(self):
        if self.fps <= 0:
            raise SelfeeError(f"fps must be > 0 (got {self.fps})")
        check_window(self.smooth, "pose smoothing window")
        check_window(self.min_bout, "minimum bout window")
        if self.max_gap < 0:
            raise SelfeeError(f"max_gap must be >= 0 (got {self.max_gap})")


@dataclass
class Pose:
    """Key points of every track: ``xy`` frames x tracks x nodes x 2 (NaN = missing)."""

    xy: np.ndarray
    nodes: list[str]
    tracks: list[str]

    def node(self, name: str) -> np.ndarray:
        if name not in self.nodes:
            raise SelfeeError(f"pose has no node '{name}' (nodes: {', '.join(self.nodes)})")
        return self.xy[:, :, self.nodes.index(name)]


def _names(ds) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in ds[()]]


def read_sleap_h5(path: str | Path) -> Pose:
    """A SLEAP "analysis" HDF5 (``tracks``: tracks x 2 x nodes x frames, ``node_names``, ``track_names``)."""
    h5py = require("h5py", "reading SLEAP pose files")
    path = Path(path)
    if not path.is_file():
        raise SelfeeError(f"{path}: pose file not found")
    try:
        with h5py.File(path, "r") as f:
            for key in ("tracks", "node_names"):
                if key not in f:
                    raise SelfeeError(f"{path}: not a SLEAP analysis file (no '{key}' dataset)")
            tr = np.asarray(f["tracks"][()], np.float64)
            nodes = _names(f["node_names"])
            tracks = _names(f["track_names"]) if "track_names" in f else []
    except OSError as exc:
        raise SelfeeError(f"{path}: cannot read as HDF5 ({exc})") from None
    n = len(nodes)
    if tr.ndim == 4 and tr.shape[1] == 2 and tr.shape[2] == n:
        xy = tr.transpose(3, 0, 2, 1)  # tracks x 2 x nodes x frames -> frames x tracks x nodes x 2
    elif tr.ndim == 4 and tr.shape[2] == 2 and tr.shape[1] == n:
        xy = tr.transpose(0, 3, 1, 2)  # frames x nodes x 2 x tracks (MATLAB-ordered files)
    else:
        raise SelfeeError(f"{path}: 'tracks' has shape {tr.shape}, which does not match {n} nodes")
    tracks = tracks or [f"track_{i}" for i in range(xy.shape[1])]
    return Pose(xy, nodes, tracks)


# ---------------------------------------------------------------------------------------------
# Per-frame measures
# ---------------------------------------------------------------------------------------------


def fill_gaps(x: np.ndarray, max_gap: int) -> np.ndarray:
    """Linear interpolation over runs of at most ``max_gap`` NaNs between valid values (along axis 0)."""
    x = np.array(x, dtype=np.float64, copy=True)
    flat = x.reshape(len(x), -1)
    t = np.arange(len(x))
    for c in range(flat.shape[1]):
        col = flat[:, c]
        bad = np.isnan(col)
        if not bad.any() or bad.all():
            continue
        good = ~bad
        filled = np.interp(t, t[good], col[good])
        starts = np.flatnonzero(bad & ~np.r_[False, bad[:-1]])
        stops = np.flatnonzero(bad & ~np.r_[bad[1:], False]) + 1
        for a, b in zip(starts, stops):
            if a > 0 and b < len(col) and b - a <= max_gap:
                col[a:b] = filled[a:b]
    return x


def median_filter(x: np.ndarray, w: int) -> np.ndarray:
    """Centred running median over ``w`` frames (NaNs ignored; edges use the frames that exist)."""
    if w <= 1:
        return x
    h = w // 2
    pad = np.pad(x, [(h, h)] + [(0, 0)] * (x.ndim - 1), constant_values=np.nan)
    win = np.lib.stride_tricks.sliding_window_view(pad, w, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows stay NaN
        return np.nanmedian(win, axis=-1)


def angle_deg(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Angle between vectors (last axis = x, y), degrees in [0, 180]; NaN where either is missing."""
    with np.errstate(all="ignore"):
        c = (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


def wing_angles(pose: Pose) -> np.ndarray:
    """frames x tracks: the larger of the two wing-to-backward-axis angles (degrees)."""
    head, thorax, abdomen = pose.node("head"), pose.node("thorax"), pose.node("abdomen")
    back = abdomen - head
    left = angle_deg(pose.node("wingL") - thorax, back)
    right = angle_deg(pose.node("wingR") - thorax, back)
    return np.fmax(left, right)


def pick_male(pose: Pose, wing: np.ndarray, opts: PoseStateOptions) -> int:
    """The male track: as given, or the one with the most wing-extension frames (ties: the shorter body)."""
    if opts.male != "auto":
        if opts.male in pose.tracks:
            return pose.tracks.index(opts.male)
        try:
            i = int(opts.male)
        except ValueError:
            raise SelfeeError(f"male '{opts.male}' is neither a track name ({', '.join(pose.tracks)}) nor an index") from None
        if not 0 <= i < len(pose.tracks):
            raise SelfeeError(f"male track index {i} is out of range (0-{len(pose.tracks) - 1})")
        return i
    if len(pose.tracks) < 2:
        raise SelfeeError("pose states need two tracks (male and female)")
    ext = np.nanmean(wing >= opts.wing_angle_deg, axis=0)
    body = np.nanmedian(np.linalg.norm(pose.node("head") - pose.node("abdomen"), axis=-1), axis=0)
    return int(np.lexsort((body, -ext))[0])


def pose_measures(pose: Pose, opts: PoseStateOptions) -> dict[str, np.ndarray]:
    """Per-frame measures of the male/female pair (see the module docstring), after gap filling and smoothing."""
    keep = [pose.nodes.index(n) for n in NODES if n in pose.nodes]
    if len(keep) < len(NODES):
        missing = [n for n in NODES if n not in pose.nodes]
        raise SelfeeError(f"pose has no node(s) {', '.join(missing)} (nodes: {', '.join(pose.nodes)})")
    xy = fill_gaps(pose.xy[:, :, keep], opts.max_gap)
    pose = Pose(median_filter(xy, opts.smooth), list(NODES), pose.tracks)
    wing = wing_angles(pose)
    m = pick_male(pose, wing, opts)
    if pose.xy.shape[1] < 2:
        raise SelfeeError("pose states need two tracks (male and female)")
    f = 1 if m == 0 else 0
    head, thorax, abdomen = pose.node("head"), pose.node("thorax"), pose.node("abdomen")
    body = float(np.nanmedian(np.linalg.norm(head[:, m] - abdomen[:, m], axis=-1)))
    if not np.isfinite(body) or body <= 0:
        raise SelfeeError("cannot measure the male's body length (head and abdomen missing)")
    to_female = thorax[:, f] - thorax[:, m]
    distance = np.linalg.norm(to_female, axis=-1) / body
    step = np.linalg.norm(np.diff(thorax[:, m], axis=0), axis=-1)
    speed = np.r_[step[:1], step] * opts.fps / body
    speed = window_mean(np.nan_to_num(speed)[:, None], opts.smooth)[:, 0].astype(np.float64)
    speed[np.isnan(thorax[:, m]).any(-1)] = np.nan
    facing = angle_deg(head[:, m] - abdomen[:, m], to_female)
    return {
        "male_track": np.int64(m),
        "body_length_px": np.float64(body),
        "wing_angle": wing[:, m],
        "female_wing_angle": wing[:, f],
        "distance_bl": distance,
        "speed_bl_s": speed,
        "facing_deg": facing,
    }


def classify_states(meas: dict[str, np.ndarray], opts: PoseStateOptions) -> np.ndarray:
    """State index per frame (into STATES), -1 where a needed measure is missing."""
    wing, dist, speed, facing = meas["wing_angle"], meas["distance_bl"], meas["speed_bl_s"], meas["facing_deg"]
    with np.errstate(invalid="ignore"):
        near = dist <= opts.near_bl
        state = np.full(len(wing), 3, np.int64)  # apart
        state[near] = 2  # close
        state[near & (speed >= opts.follow_speed) & (facing <= opts.facing_deg)] = 1  # following
        state[wing >= opts.wing_angle_deg] = 0  # wing_extension
    missing = np.isnan(wing) | np.isnan(dist)
    missing |= near & ~(wing >= opts.wing_angle_deg) & (np.isnan(speed) | np.isnan(facing))
    state[missing] = -1
    if opts.min_bout > 1:
        # Missing frames take part in the vote as a state of their own, so gaps stay gaps.
        tmp = np.where(state < 0, len(STATES), state)
        tmp = sliding_mode(tmp, opts.min_bout, len(STATES) + 1)
        state = np.where(tmp == len(STATES), -1, tmp)
    return state


def pose_states(pose: Pose, opts: PoseStateOptions = PoseStateOptions()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(label per frame, '' = none; the measures)."""
    meas = pose_measures(pose, opts)
    idx = classify_states(meas, opts)
    labels = np.where(idx >= 0, np.array(STATES, dtype=object)[np.maximum(idx, 0)], "")
    return labels.astype(object), meas


def write_pose_states(
    h5: str | Path, out_dir: str | Path, stem: str | None = None, video: str | Path | None = None,
    opts: PoseStateOptions = PoseStateOptions(),
) -> dict:
    """Read the pose, derive the states and write ``<stem>.csv`` (frame,label) plus measures and a plot."""
    out = Path(out_dir)
    if video is not None:
        from selfee.video import probe

        info = probe(video)
        stem = stem or Path(video).stem
        if opts.fps == PoseStateOptions().fps and info.fps:
            opts = PoseStateOptions(**{**asdict(opts), "fps": float(info.fps)})
    h5 = Path(h5)
    stem = stem or h5.name.split(".")[0]
    pose = read_sleap_h5(h5)
    labels, meas = pose_states(pose, opts)
    frames = np.arange(len(labels), dtype=np.int64)
    path = io.write_label_csv(out / f"{stem}.csv", frames, labels)
    keys = ["wing_angle", "female_wing_angle", "distance_bl", "speed_bl_s", "facing_deg"]
    io.write_table(out / "pose_features" / f"{stem}.csv", ["frame", "time_s", *keys, "state"],
                   ([int(i), i / opts.fps, *(float(meas[k][i]) for k in keys), labels[i]] for i in frames))
    counts = {s: int((labels == s).sum()) for s in STATES}
    counts["(none)"] = int((labels == "").sum())
    plot_pose_states(out / "pose_features" / f"{stem}.png", frames / opts.fps, meas, labels, opts)
    log.info("%s: male = %s; %s", path, pose.tracks[int(meas["male_track"])], counts)
    return {"labels": path, "male_track": pose.tracks[int(meas["male_track"])], "counts": counts,
            "body_length_px": float(meas["body_length_px"]), "options": asdict(opts)}


def plot_pose_states(path: Path, t: np.ndarray, meas: dict, labels: np.ndarray, opts: PoseStateOptions) -> Path:
    plt = plots.pyplot()
    fig, axes = plt.subplots(4, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [2, 2, 2, 1]})
    axes[0].plot(t, meas["wing_angle"], lw=0.6, label="male")
    axes[0].plot(t, meas["female_wing_angle"], lw=0.6, alpha=0.6, label="female")
    axes[0].axhline(opts.wing_angle_deg, color="k", ls="--", lw=0.7)
    axes[0].set_ylabel("wing angle (deg)")
    axes[0].legend(fontsize=7, loc="upper left")
    axes[1].plot(t, meas["distance_bl"], lw=0.6)
    axes[1].axhline(opts.near_bl, color="k", ls="--", lw=0.7)
    axes[1].set_ylabel("distance (BL)")
    axes[2].plot(t, meas["speed_bl_s"], lw=0.6)
    axes[2].axhline(opts.follow_speed, color="k", ls="--", lw=0.7)
    axes[2].set_ylabel("male speed (BL/s)")
    idx = np.array([STATES.index(s) if s else -1 for s in labels])
    cmap = plots.state_cmap(len(STATES))
    axes[3].pcolormesh(np.append(t, t[-1] + 1 / opts.fps), [0, 1], np.ma.masked_less(idx, 0)[None].astype(float),
                       cmap=cmap, vmin=-0.5, vmax=len(STATES) - 0.5, rasterized=True)
    axes[3].set_yticks([])
    axes[3].set_xlabel("time (s)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(len(STATES))]
    axes[3].legend(handles, STATES, ncol=4, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.6), frameon=False)
    return plots.save(fig, path)


def crop_centres(pose: Pose, track: int, max_gap: int = 5, smooth: int = 9) -> np.ndarray:
    """frames x 2 crop centres: the track's thorax, gaps filled, smoothed; missing frames keep the last centre."""
    xy = fill_gaps(pose.node("thorax")[:, track], max_gap)
    xy = median_filter(xy, smooth)
    ok = ~np.isnan(xy).any(axis=1)
    if not ok.any():
        raise SelfeeError("the thorax of the chosen track is never found; nothing to centre a crop on")
    idx = np.where(ok, np.arange(len(xy)), 0)
    idx = np.maximum.accumulate(idx)
    first = int(np.flatnonzero(ok)[0])
    idx[:first] = first
    return xy[idx]


def write_pose_crop(
    video: str | Path, h5: str | Path, out_dir: str | Path, size: int = 384, track: str = "male",
    opts: PoseStateOptions = PoseStateOptions(), crf: int = 18,
) -> Path:
    """A ``size`` x ``size`` video following one fly (thorax at the centre; black beyond the frame).

    Same frame count, numbering and rate as the input, and the same stem, so label files of the
    full video apply to it unchanged. ``track``: ``male`` (as :func:`pick_male` finds it), a track
    name or an index.
    """
    from selfee.video import VideoReader, VideoWriter, probe

    info = probe(video)
    pose = read_sleap_h5(h5)
    if len(pose.xy) != info.frames:
        log.warning("%s has %d frames but the pose has %d; frames beyond the pose keep its last centre",
                    video, info.frames, len(pose.xy))
    if track == "male":
        keep = [pose.nodes.index(n) for n in NODES]
        sub = Pose(fill_gaps(pose.xy[:, :, keep], opts.max_gap), list(NODES), pose.tracks)
        t = pick_male(sub, wing_angles(sub), opts)
    else:
        t = pick_male(pose, np.zeros((1, len(pose.tracks))), PoseStateOptions(male=track))
    centres = crop_centres(pose, t, opts.max_gap)
    out = Path(out_dir) / f"{Path(video).stem}.mp4"
    out.parent.mkdir(parents=True, exist_ok=True)
    h = size // 2
    with VideoWriter(out, info.fps and round(info.fps) or 25, crf=crf) as writer, VideoReader(info) as reader:
        canvas = np.zeros((info.height + size, info.width + size, 3), np.uint8)  # padded by h on every side
        for i, rgb in reader.iter_frames(0, info.frames):
            cx, cy = np.round(centres[min(i, len(centres) - 1)]).astype(int)
            cx, cy = int(np.clip(cx, 0, info.width - 1)), int(np.clip(cy, 0, info.height - 1))
            canvas[h : h + info.height, h : h + info.width] = rgb
            writer.write(canvas[cy : cy + size, cx : cx + size])
    log.info("%s: %dx%d crop following %s", out, size, size, pose.tracks[t])
    return out
