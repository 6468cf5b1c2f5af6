"""Downstream analyses of `selfee-fast embed` outputs: classify, anomaly, map, motifs, compare, pose-states, evaluate.

Each command parses its options and hands off to one function in ``selfee.analysis``; scikit-learn,
SciPy, matplotlib and h5py are imported there, only when a command runs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from selfee.cli.options import EXIT_PARTIAL

EMBED_HELP = "Directory written by 'selfee-fast embed': <stem>.npy (frames x dim) + <stem>.csv (frame,time_s) per video."
DEVICE_HELP = "Where the chunked cosine distances run: auto (the GPU when there is one, else the CPU), cpu, cuda or cuda:N."
GAP_HELP = (
    "With --segments: reference frames within this many frames of the held-out segment are left out "
    "(neighbouring frames are near-duplicates that leak across the boundary); 0: off.")


def _finish(errors) -> None:
    if errors:
        typer.echo(f"{len(errors)} input(s) failed: " + "; ".join(str(e) for e in errors[:3]), err=True)
        raise typer.Exit(EXIT_PARTIAL)


def classify_cmd(
    embed_dir: Path = typer.Argument(..., help=EMBED_HELP),
    labels: Path = typer.Option(..., "--labels", help=(
        "Directory with one label file per video, named <stem>.txt or <stem>.csv. .txt: the original Selfee "
        "format, 'start end label' per line, 1-based inclusive video frame numbers, '#' starts a comment. "
        ".csv: header 'frame,label', 0-based video frame numbers (as in the embedding CSV). Frames without a "
        "label are left out of the scores.")),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    k: int = typer.Option(200, help="Neighbours that vote (the paper: 200)."),
    tau: float = typer.Option(0.07, help="Temperature of the vote weight exp(similarity / tau)."),
    balance: bool = typer.Option(True, help="Multiply class votes by N / N_class of the reference set."),
    features: str = typer.Option("frame", help=(
        "Temporal aggregation of the embeddings before k-NN: frame (none), mean (sliding-window mean), "
        "mean_std (frame, window mean and window std side by side, each L2-normalized).")),
    feature_window: int = typer.Option(21, help="Frames in the feature window (odd)."),
    smooth: str = typer.Option("mode", help=(
        "Temporal aggregation of predictions: mode (sliding mode of predicted labels, the paper's), "
        "mean (sliding mean of class scores), none.")),
    smooth_window: int = typer.Option(21, help="Frames in the prediction window (odd)."),
    segments: int = typer.Option(1, help=(
        "Cut each video into this many contiguous parts and leave one part out at a time "
        "(for a single labelled video). 1: leave one whole video out.")),
    gap: int = typer.Option(21, help=GAP_HELP),
    device: str = typer.Option("auto", help=DEVICE_HELP),
):
    """k-NN behaviour classification with leave-one-video-out cross-validation (the paper's protocol; --segments: leave one segment out).

    EMBED_DIR holds the embeddings (<stem>.npy + <stem>.csv), --labels the label files (<stem>.txt or <stem>.csv). Every video (or, with --segments, every segment) is classified against the labelled frames of all the other videos by a weighted, class-balanced cosine k-NN vote. Writes to OUT: metrics.json (pooled and per-video macro F1, mAP, accuracy, per-class precision/recall), per_video.csv, per_class.csv, confusion.csv + confusion.png (rows = true), predictions/<video>.csv (frame,time_s,true,predicted,score_<class>...) and ethogram.png (true vs predicted raster).
    """
    from selfee.analysis.classify import KnnOptions, classify

    opts = KnnOptions(k=k, tau=tau, balance=balance, features=features, feature_window=feature_window,
                      smooth=smooth, smooth_window=smooth_window, gap=gap, device=device)
    res = classify(embed_dir, labels, out, opts, segments=segments)
    p = res.pooled
    typer.echo(f"pooled over {p['frames']} frames of {len(res.per_video)} videos: macro F1 {p['macro_f1']:.4f}, "
               f"mAP {p['mAP']:.4f}, accuracy {p['accuracy']:.4f} -> {out}")
    _finish(res.errors)


def anomaly_cmd(
    reference: Path = typer.Option(..., "--reference", help="Embeddings of the reference group. " + EMBED_HELP),
    query: Path = typer.Option(..., "--query", help="Embeddings of the videos to score (same layout)."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    control: Path | None = typer.Option(None, "--control", help=(
        "Embeddings of a control group, scored against the reference like the query; the threshold is the "
        "largest control score (or --quantile of them). Without it: --threshold, or the reference videos "
        "scored leave-one-out against each other.")),
    window: int = typer.Option(50, help="Frames on each side of a frame left out of its own-video distance."),
    quantile: float = typer.Option(1.0, help="Threshold = this quantile of the control scores (1.0 = the maximum)."),
    threshold: float | None = typer.Option(None, help="A fixed threshold instead of one from a control group."),
    min_frames: int = typer.Option(1, help="Report only anomalous ranges at least this many frames long."),
    merge_gap: int = typer.Option(0, help="Merge anomalous ranges separated by at most this many frames."),
    videos: Path | None = typer.Option(None, "--videos", help=(
        "Directory of the query videos (<stem>.mp4, ...): write clips/<stem>_anomalies.mp4 of the anomalous frames.")),
    clip_max_frames: int = typer.Option(1500, help="Most frames per anomaly clip."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
):
    """Anomaly scores of query frames against a reference group (the paper's score).

    score(x) = min cosine distance from x to any reference frame - min distance from x to its own video outside +-WINDOW frames. Computed in chunks: memory stays bounded for hours of video. Writes to OUT: scores/<video>.csv (frame,time_s,score,ref_distance,self_distance,anomalous), control_scores/, anomalous_ranges.csv (video,start_frame,end_frame,start_s,end_s,...), summary.json (threshold and counts), anomaly_scores.png, and with --videos a clip of the anomalous frames per video.
    """
    from selfee.analysis.anomaly import AnomalyOptions, detect

    opts = AnomalyOptions(window=window, quantile=quantile, threshold=threshold, min_frames=min_frames,
                          merge_gap=merge_gap, device=device)
    res = detect(reference, query, out, control, opts, videos_dir=videos, clip_max_frames=clip_max_frames)
    n = sum(int((v.score > res.threshold).sum()) for v in res.query)
    typer.echo(f"threshold {res.threshold:.4f} ({res.threshold_source}); {n} anomalous frames in "
               f"{sum(len(r) for r in res.ranges.values())} ranges -> {out}")
    _finish(res.errors)


def map_cmd(
    embed_dir: Path = typer.Argument(..., help=EMBED_HELP),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    method: str = typer.Option("tsne", help="tsne, umap (needs umap-learn: pip install 'selfee-fast[umap]') or pca."),
    labels: Path | None = typer.Option(None, "--labels", help="Label directory (as for classify) to colour by label."),
    max_points: int = typer.Option(20000, help="Frames shown in all, taken evenly in time from every video."),
    pca_dim: int = typer.Option(50, help="PCA dimensions before t-SNE / UMAP."),
    perplexity: float = typer.Option(30.0, help="t-SNE perplexity."),
    seed: int = typer.Option(0, help="Random seed."),
):
    """2-D map of the embeddings (t-SNE, UMAP or PCA of cosine-normalized frames).

    Writes to OUT: map.csv (video,frame,time_s,x,y,label), map_by_video.png, map_by_time.png, map_by_relative_time.png (several videos) and map_by_label.png (with --labels).
    """
    from selfee.analysis.maps import make_map

    res = make_map(embed_dir, out, method, labels, max_points, pca_dim, perplexity, seed)
    typer.echo(f"{method} map of {len(res.xy)} frames -> {out}")
    _finish(res.errors)


def motifs_cmd(
    embed_dir: Path = typer.Argument(..., help=EMBED_HELP),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    k: int = typer.Option(10, help="Number of states (k-means clusters)."),
    pca_dim: int = typer.Option(32, help="PCA dimensions before clustering (0: none)."),
    smooth: int = typer.Option(1, help="Frames of the moving average before clustering (odd; 1 = none)."),
    state_smooth: int = typer.Option(1, help="Frames of the sliding mode on the state sequence (odd; 1 = none)."),
    max_fit: int = typer.Option(200_000, help="Frames (spread evenly) used to fit PCA and k-means."),
    seed: int = typer.Option(0, help="Random seed."),
):
    """Unsupervised behaviour motifs: cluster every frame into K states.

    Writes to OUT: states/<video>.csv (frame,time_s,state; state 0 = the most used), usage.csv (fraction of frames per state and video), transitions.csv (bout-to-bout transition probabilities) and transition_counts.csv, states_summary.csv (frames, bouts, mean bout length), model.npz (PCA and centroids), and ethogram.png, usage.png, transitions.png.
    """
    from selfee.analysis.motifs import MotifOptions, find_motifs

    opts = MotifOptions(k=k, pca_dim=pca_dim, smooth=smooth, state_smooth=state_smooth, max_fit=max_fit, seed=seed)
    res = find_motifs(embed_dir, out, opts)
    typer.echo(f"{k} states over {sum(len(s) for s in res.states.values())} frames of {len(res.states)} videos -> {out}")
    _finish(res.errors)


def compare_cmd(
    embed_dirs: list[Path] = typer.Argument(..., help="One or more embedding directories; each is a group. " + EMBED_HELP),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    bin_s: float = typer.Option(1.0, "--bin", help="Seconds per time bin (mean embedding); 0 = every frame."),
    band: float | None = typer.Option(None, help="Sakoe-Chiba band half-width as a fraction of the longer sequence."),
    permutations: int = typer.Option(10000, help="Permutations for the between- vs within-group test."),
):
    """Time-series comparison of videos by dynamic time warping of their embedding sequences.

    Writes to OUT: dtw_distances.csv + dtw_distances.png (video x video), nearest.csv (each video's nearest other video), dtw_mds.png (videos placed by distance, coloured by group) and compare.json (with several groups: mean within/between distance and a permutation p-value).
    """
    from selfee.analysis.compare import CompareOptions, compare

    res = compare(embed_dirs, out, CompareOptions(bin_s=bin_s, band=band, permutations=permutations))
    msg = f"DTW distances between {len(res.names)} videos -> {out}"
    if res.test.get("p_value") is not None:
        msg += (f" (within {res.test['mean_within']:.4f}, between {res.test['mean_between']:.4f}, "
                f"p = {res.test['p_value']:.4g})")
    typer.echo(msg)
    _finish(res.errors)


def pose_states_cmd(
    h5: Path = typer.Argument(..., help="SLEAP analysis HDF5 of a fly pair (tracks, node_names: head, thorax, "
                                        "abdomen, wingL, wingR)."),
    out: Path = typer.Option(..., "--out", help="Label directory to write <stem>.csv into."),
    video: Path | None = typer.Option(None, "--video", help="The video the pose belongs to (gives stem and fps)."),
    stem: str | None = typer.Option(None, help="Name of the label file (default: the video's stem)."),
    fps: float = typer.Option(25.0, help="Frames per second (taken from --video when given)."),
    male: str = typer.Option("auto", help="Male track: auto (the one extending a wing most), a name or an index."),
    wing_angle: float = typer.Option(35.0, help="Wing extension: wing-to-body-axis angle at least this (degrees)."),
    near: float = typer.Option(3.0, help="Close: thoraxes at most this many male body lengths apart."),
    follow_speed: float = typer.Option(1.0, help="Following: male speed at least this (body lengths / s)."),
    facing: float = typer.Option(60.0, help="Following: female within this angle of the male's heading (degrees)."),
    max_gap: int = typer.Option(5, help="Interpolate missing key points over at most this many frames."),
    smooth: int = typer.Option(5, help="Frames of the running median on the measures (odd)."),
    min_bout: int = typer.Option(5, help="Frames of the sliding mode on the states (odd)."),
):
    """Per-frame courtship states from fly pose: wing_extension, following, close, apart.

    Writes OUT/<stem>.csv in the label CSV format (frame,label; 0-based frames) for 'classify', plus OUT/pose_features/<stem>.csv (wing angle, distance, speed, facing per frame) and a plot. These are pose-derived states, not human annotations (see docs/analysis.md for the derivation).
    """
    from selfee.analysis.pose_states import PoseStateOptions, write_pose_states

    opts = PoseStateOptions(fps=fps, male=male, wing_angle_deg=wing_angle, near_bl=near, follow_speed=follow_speed,
                            facing_deg=facing, max_gap=max_gap, smooth=smooth, min_bout=min_bout)
    res = write_pose_states(h5, out, stem=stem, video=video, opts=opts)
    typer.echo(f"{res['labels']}: male = {res['male_track']}; " + ", ".join(f"{k} {v}" for k, v in res["counts"].items()))


def pose_crop_cmd(
    h5: Path = typer.Argument(..., help="SLEAP analysis HDF5 of the video."),
    video: Path = typer.Option(..., "--video", help="The video the pose belongs to."),
    out: Path = typer.Option(..., "--out", help="Directory for the cropped video, <stem>.mp4 (same stem as --video)."),
    size: int = typer.Option(384, help="Side of the square crop in pixels of the video."),
    track: str = typer.Option("male", help="The fly to follow: male (found as in pose-states), a track name or an index."),
):
    """A square video that follows one fly (its thorax at the centre), for embedding animals that are small in a large arena.

    Writes OUT/<stem>.mp4 with the same frame count, numbering, rate and stem as the input, so the label files of the full video apply unchanged. Parts of the crop outside the frame are black.
    """
    from selfee.analysis.pose_states import write_pose_crop

    path = write_pose_crop(video, h5, out, size=size, track=track)
    typer.echo(f"wrote {path}")


def evaluate_cmd(
    videos: list[str] = typer.Argument(..., help="Labelled video files, folders of videos, or glob patterns."),
    labels: Path = typer.Option(..., "--labels", help="Label directory, as for classify (<stem>.txt or <stem>.csv)."),
    weights: Path = typer.Option(..., "--weights", "-w", help="Trained selfee-fast (or original Selfee) checkpoint."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    segments: int = typer.Option(1, help="Cut each video into this many parts for leave-one-out (one labelled video)."),
    gap: int = typer.Option(21, help=GAP_HELP),
    pixel_size: int = typer.Option(16, help="Raw-pixel baseline: each live frame shrunk to this many pixels a side."),
    methods: str = typer.Option("trained,untrained,pixels", help="Comma-separated subset of trained, untrained, pixels."),
    k: int = typer.Option(200, help="Neighbours that vote."),
    features: str = typer.Option("frame", help="frame, mean or mean_std (as for classify)."),
    feature_window: int = typer.Option(21, help="Frames in the feature window (odd)."),
    smooth: str = typer.Option("mode", help="mode, mean or none (as for classify)."),
    smooth_window: int = typer.Option(21, help="Frames in the prediction window (odd)."),
    seed: int = typer.Option(0, help="Seed of the untrained encoder's random weights (a run's train.seed gives its initial weights)."),
    untrained_bn: str = typer.Option("frames", "--untrained-bn", help="Untrained encoder's BatchNorm statistics: frames (estimated on plain frames of the videos, as the trained one's) or init (as built)."),
    device: str = typer.Option("auto", help="Device for embedding and the k-NN: auto (the GPU when there is one), cpu, cuda or cuda:N."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Frames per embedding batch."),
    reuse: bool = typer.Option(False, "--reuse", help="Keep embeddings already in OUT/embed_<method> (same weights!)."),
):
    """Quality check on labelled videos: trained embeddings vs an untrained encoder of the same architecture vs raw pixels.

    Embeds the videos three ways into OUT/embed_<method>/ (the trained weights' live frames, input size and preprocessing for all three), runs the same k-NN cross-validation as 'classify' (leave one video out, or one segment with --segments) on each into OUT/classify_<method>/, and writes OUT/evaluation.csv, evaluation.json and evaluation.png (macro F1, mAP and accuracy per method).
    """
    from selfee.analysis.classify import KnnOptions
    from selfee.analysis.evaluate import evaluate
    from selfee.runtime import resolve_device

    device = str(resolve_device(device))  # once, for the embedding and the k-NN alike
    opts = KnnOptions(k=k, features=features, feature_window=feature_window, smooth=smooth,
                      smooth_window=smooth_window, gap=gap, device=device)
    res = evaluate(videos, labels, weights, out, opts, segments=segments, pixel_size=pixel_size, seed=seed,
                   device=device, batch_size=batch_size, methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
                   reuse=reuse, untrained_bn=untrained_bn)
    typer.echo(f"{'method':<10} {'dim':>6} {'frames':>7} {'macro F1':>9} {'mAP':>7} {'accuracy':>9}")
    for r in res.table:
        typer.echo(f"{r['method']:<10} {r['dim']:>6} {r['frames']:>7} {r['macro_f1']:>9.4f} {r['mAP']:>7.4f} {r['accuracy']:>9.4f}")
    typer.echo(f"-> {out}")
