"""losskit against PyTorch on the CPU, case by case, interleaved in one run.

Started by bench/peers/run, which builds the losskit side (bench/peers/losskit-peer) and this
script's virtual environment. Every case is forward + backward of a loss (or one Adam step of
a bundled model) and reads the loss and one gradient element back, on both sides.

The loss cases are fair by construction: this script draws each case's arrays once, writes
them as .npy files for losskit and hands the same arrays to PyTorch in the shapes PyTorch users
pass ([N, C], [N, C, H, W], [N, C, D, H, W]; targets [N, ...]). Before timing, both sides
compute the loss and three gradient elements on them; a case whose values differ by more than
1e-4 (relative) fails and is not timed. Each round runs every case on losskit, then on
PyTorch, and gives a ratio of their median times; the reported ratio is the median over the
rounds, with the smallest and largest beside it.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LOSS_CASES = {
    # name: (loss, output shape, class-index target?)
    "ce_256x10": ("ce", (256, 10), True),
    "ce_4096x1000": ("ce", (4096, 1000), True),
    "ce_16x4x128x128": ("ce", (16, 4, 128, 128), True),
    "ce_2x4x32x64x64": ("ce", (2, 4, 32, 64, 64), True),
    "mse_256x10": ("mse", (256, 10), False),
    "mse_4096x1024": ("mse", (4096, 1024), False),
    "mse_16x4x128x128": ("mse", (16, 4, 128, 128), False),
    "mse_2x4x32x64x64": ("mse", (2, 4, 32, 64, 64), False),
    "dice_256x10": ("dice", (256, 10), True),
    "dice_4096x1000": ("dice", (4096, 1000), True),
    "dice_16x4x128x128": ("dice", (16, 4, 128, 128), True),
    "dice_2x4x32x64x64": ("dice", (2, 4, 32, 64, 64), True),
}
# name: U-Net (batch, channels, classes, side, depth) for the U-Net cases; the last is the
# U-Net as `losskit train --task segmentation --data FOLDER` trains it (crates/examples'
# folder_defaults: batch 8 of 128×128 patches, depth 3), on RGB images.
STEP_CASES = ["cnn_step_b32", "unet_step_b16", "unet_step_b8_128"]
UNET_STEPS = {"unet_step_b16": (16, 1, 3, 48, 2), "unet_step_b8_128": (8, 3, 2, 128, 3)}


def dice_loss(x, t, smooth_nr=1e-5, smooth_dr=1e-5):
    """MONAI's DiceLoss(softmax=True, to_onehot_y=True) on the natural shape: softmax over the
    classes, sums over the spatial axes (none for [N, C]: one position per sample, MONAI's
    [N, C, 1] view), mean over samples and classes."""
    c = x.shape[1]
    p = torch.softmax(x, 1)
    onehot = F.one_hot(t, c).movedim(-1, 1).to(p.dtype)
    axes = tuple(range(2, x.dim()))
    if axes:
        intersection = (p * onehot).sum(axes)
        denominator = p.sum(axes) + onehot.sum(axes)
    else:
        intersection = p * onehot
        denominator = p + onehot
    return (1 - (2 * intersection + smooth_nr) / (denominator + smooth_dr)).mean()


LOSS_FUNCTIONS = {"ce": F.cross_entropy, "mse": F.mse_loss, "dice": dice_loss}


def case_arrays(name):
    """The case's output and target, drawn once from a seed of the case's name: float32
    logits of the case's shape, and int64 class indices [N, ...] or a float32 target."""
    kind, shape, indices = LOSS_CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    output = rng.standard_normal(shape, dtype=np.float32)
    if indices:
        target = rng.integers(0, shape[1], (shape[0],) + shape[2:], dtype=np.int64)
    else:
        target = rng.standard_normal(shape, dtype=np.float32)
    return output, target


def write_inputs(directory, cases):
    for name in cases:
        if name in LOSS_CASES:
            output, target = case_arrays(name)
            np.save(os.path.join(directory, f"{name}.output.npy"), output)
            np.save(os.path.join(directory, f"{name}.target.npy"), target)


def read_inputs(directory, name):
    return (
        torch.from_numpy(np.load(os.path.join(directory, f"{name}.output.npy"))),
        torch.from_numpy(np.load(os.path.join(directory, f"{name}.target.npy"))),
    )


def loss_runner(name, inputs):
    kind = LOSS_CASES[name][0]
    base, target = read_inputs(inputs, name)
    fn = LOSS_FUNCTIONS[kind]

    def run():
        x = base.detach().requires_grad_()
        loss = fn(x, target)
        loss.backward()
        return loss.item() + x.grad.view(-1)[0].item()

    return run


def check_indices(name):
    """Three gradient elements compared: the first, one in the middle, the last."""
    size = 1
    for d in LOSS_CASES[name][1]:
        size *= d
    return [0, size // 2 + 1, size - 1]


def torch_check(name, inputs):
    base, target = read_inputs(inputs, name)
    x = base.detach().requires_grad_()
    loss = LOSS_FUNCTIONS[LOSS_CASES[name][0]](x, target)
    loss.backward()
    flat = x.grad.reshape(-1)
    return loss.item(), [flat[i].item() for i in check_indices(name)]


def close(a, b, rtol=1e-4):
    return abs(a - b) <= rtol * max(abs(a), abs(b)) + 1e-12


def block(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())


class Cnn(nn.Module):
    """crates/examples/src/models.rs's Cnn."""

    def __init__(self, channels=1, classes=5, w=12):
        super().__init__()
        self.b1, self.b2, self.b3 = block(channels, w), block(w, 2 * w), block(2 * w, 4 * w)
        self.hidden = nn.Linear(4 * w * 9, 64)
        self.output = nn.Linear(64, classes)

    def forward(self, x):
        x = F.max_pool2d(self.b1(x), 2)
        x = F.max_pool2d(self.b2(x), 2)
        x = F.max_pool2d(self.b3(x), 2)
        return self.output(F.relu(self.hidden(x.flatten(1))))


class UNet(nn.Module):
    """crates/examples/src/models.rs's UNet: per level two blocks and a 2×2 max pooling down, a
    2×2 transposed convolution up, the skip concatenated after it, one block."""

    def __init__(self, channels=1, classes=3, w=8, depth=2):
        super().__init__()
        widths = [w << level for level in range(depth + 1)]

        def double(i, o):
            return nn.Sequential(block(i, o), block(o, o))

        self.encoders = nn.ModuleList(
            double(channels if level == 0 else widths[level - 1], widths[level])
            for level in range(depth)
        )
        self.bottom = double(widths[depth - 1], widths[depth])
        levels = list(reversed(range(depth)))
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2) for level in levels
        )
        self.decoders = nn.ModuleList(block(2 * widths[level], widths[level]) for level in levels)
        self.head = nn.Conv2d(w, classes, 1)

    def forward(self, x):
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = decoder(torch.cat([up(x), skip], 1))
        return self.head(x)


def step_runner(name):
    torch.manual_seed(7)
    g = torch.Generator().manual_seed(3)
    if name.startswith("cnn"):
        model, classes = Cnn(), 5
        images = torch.randn(32, 1, 28, 28, generator=g)
        target = torch.randint(0, classes, (32,), generator=g)

        def loss_fn(out):
            return F.cross_entropy(out, target)
    else:
        batch, channels, classes, side, depth = UNET_STEPS[name]
        model = UNet(channels, classes, depth=depth)
        images = torch.randn(batch, channels, side, side, generator=g)
        target = torch.randint(0, classes, (batch, side * side), generator=g)

        def loss_fn(out):
            return dice_loss(out.flatten(2), target)

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def run():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images))
        loss.backward()
        optimizer.step()
        return loss.item()

    return run


def runner(name, inputs):
    return loss_runner(name, inputs) if name in LOSS_CASES else step_runner(name)


def status_bytes(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak():
    """Linux clear_refs 5: the peak resident memory starts again from what is held now (the
    losskit side does the same), so that the peak measures the run, not its inputs' reading."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


class Losskit:
    def __init__(self, binary):
        self.process = subprocess.Popen(
            [binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def ask(self, request):
        self.process.stdin.write(request + "\n")
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        if "error" in reply:
            sys.exit(f"losskit-peer: {reply['error']}")
        return reply

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def peak_of(command, request, env=None):
    """Peak memory of one run of a case, in a fresh process: how far the peak rose above what
    the process held with the inputs ready."""
    reply = subprocess.run(
        command,
        input=request + "\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    )
    return json.loads(reply.stdout.splitlines()[-1])["peak_bytes"]


def reps_for(case):
    # A loss case: about a tenth of a second of losskit a round (at roughly a nanosecond an
    # element here, more for the small cases' fixed costs), so that each round's median is a
    # steady state rather than the first calls after the pause (threads waking, caches the
    # other side left cold). Until 7dd2ecd this was 2e6 // size, at least five: five calls of
    # the million-element cases, 5-15 ms a round, well short of the tenth its comment said.
    # A training step: five (its rounds' ratios are noisy; kept so the steps stay comparable
    # with the earlier runs).
    if case in STEP_CASES:
        return 5
    kind, shape, _ = LOSS_CASES[case]
    size = 1
    for d in shape:
        size *= d
    return max(5, min(1000, int(1e8 // size)))


# Before each side's timed batch: both libraries keep their worker threads spinning for a
# moment after parallel work (OpenMP, rayon), which would steal the cores from the other side.
SETTLE_SECONDS = 0.05


def milliseconds(values):
    return f"{min(values) * 1e3:.3g} – {statistics.median(values) * 1e3:.3g} – {max(values) * 1e3:.3g}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--losskit", help="the losskit-peer binary")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cases", default="", help="only cases whose name contains this")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--markdown", help="also write the table here")
    parser.add_argument("--peak", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)

    if args.peak:
        # Child mode: the PyTorch side of one case's peak memory.
        run = runner(args.peak, args.inputs)
        reset_peak()
        before = status_bytes("VmRSS:")
        run()
        print(json.dumps({"case": args.peak, "peak_bytes": max(0, status_bytes("VmHWM:") - before)}))
        return

    losskit = Losskit(args.losskit)
    cases = [c for c in losskit.ask("cases") if args.cases in c]
    inputs_dir = tempfile.TemporaryDirectory(prefix="losskit-peers-")
    inputs = inputs_dir.name
    write_inputs(inputs, cases)
    losskit.ask(f"inputs {inputs}")
    failed = []
    for case in [c for c in cases if c in LOSS_CASES]:
        indices = check_indices(case)
        theirs = torch_check(case, inputs)
        ours = losskit.ask(f"check {case} {' '.join(map(str, indices))}")
        ours = (ours["loss"], ours["grad"])
        same = close(ours[0], theirs[0]) and all(map(close, ours[1], theirs[1]))
        verdict = "same" if same else "DIFFERENT"
        print(
            f"check {case}: loss {ours[0]:.7g} vs {theirs[0]:.7g}, gradient at {indices} "
            f"{[f'{g:.6g}' for g in ours[1]]} vs {[f'{g:.6g}' for g in theirs[1]]}: {verdict}",
            file=sys.stderr,
            flush=True,
        )
        if not same:
            failed.append(case)
    cases = [c for c in cases if c not in failed]
    torch_runners = {}
    times = {case: [] for case in cases}
    for round_ in range(args.rounds):
        for case in cases:
            ours, theirs = [], []
            reps = reps_for(case)
            time.sleep(SETTLE_SECONDS)
            ours.extend(losskit.ask(f"run {case} {reps}")["seconds"])
            if case not in torch_runners:
                torch_runners[case] = runner(case, inputs)
                for _ in range(2):
                    torch_runners[case]()
            run = torch_runners[case]
            time.sleep(SETTLE_SECONDS)
            for _ in range(reps):
                started = time.perf_counter()
                run()
                theirs.append(time.perf_counter() - started)
            times[case].append((ours, theirs))
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    losskit.close()

    for case in cases:
        print(f"ratio {case} {statistics.median(round_ratios(times[case])):.3f}", flush=True)
    header = (
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {threads} threads, "
        f"PyTorch {torch.__version__}, {args.rounds} interleaved rounds"
    )
    # The times first (printed and written), then memory: each case once more in a fresh
    # process per side, which takes a while.
    bandwidth = copy_bandwidth()
    header += f"; copy bandwidth {bandwidth / 1e9:.1f} GB/s"
    emit(args.markdown, header, cases, times, {}, failed, bandwidth)
    if not args.no_memory:
        peaks = {}
        for case in cases:
            try:
                peaks[case] = (
                    # mimalloc gives freed memory back at once here: otherwise the pages of
                    # the .npy reading, freed but kept, would serve the run unseen.
                    peak_of(
                        [args.losskit],
                        f"inputs {inputs}\npeak {case}",
                        dict(os.environ, MIMALLOC_PURGE_DELAY="0"),
                    ),
                    peak_of([sys.executable, __file__, "--peak", case, "--inputs", inputs], ""),
                )
            except (subprocess.SubprocessError, ValueError, KeyError) as error:
                print(f"peak {case}: {error}", file=sys.stderr)
        emit(args.markdown, header, cases, times, peaks, failed, bandwidth)
    inputs_dir.cleanup()
    if failed:
        sys.exit(f"losskit and PyTorch computed different values on {', '.join(failed)}")


def copy_bandwidth():
    """Bytes a second this machine moves in a large copy (read once, write once; numpy's
    single-threaded copy of 256 MiB, the best of five)."""
    source = np.ones(64 * 2**20, dtype=np.float32)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.nbytes / best


# The passes over output-sized float32 arrays that no implementation of a case can avoid:
# cross-entropy reads the output once and writes the gradient once; MSE also reads the target;
# Dice reads the output a second time, because its class sums must be complete before any
# gradient element can be written.
FLOOR_PASSES = {"ce": 2, "mse": 3, "dice": 3}


def floors(cases, bandwidth):
    """(case, floor ms) of the cases of at least a million elements."""
    rows = []
    for case in cases:
        if case not in LOSS_CASES:
            continue
        kind, shape, _ = LOSS_CASES[case]
        size = 1
        for d in shape:
            size *= d
        if size >= 2**20:
            rows.append((case, FLOOR_PASSES[kind] * 4 * size / bandwidth * 1e3))
    return rows


def round_ratios(rounds):
    """Each round's ratio of the median times, losskit over PyTorch."""
    return [statistics.median(ours) / statistics.median(theirs) for ours, theirs in rounds]


def emit(markdown, header, cases, times, peaks, failed, bandwidth):
    lines = [
        header,
        "",
        "| case | losskit ms (min – median – max) | PyTorch ms (min – median – max) "
        "| losskit / PyTorch: median of the rounds (min – max) | peak MiB losskit | peak MiB PyTorch |",
        "|---|---|---|---|---|---|",
    ]
    for case in cases:
        ours = [t for round_ in times[case] for t in round_[0]]
        theirs = [t for round_ in times[case] for t in round_[1]]
        ratios = round_ratios(times[case])
        peak = peaks.get(case)
        memory = f"{peak[0] / 2**20:.1f} | {peak[1] / 2**20:.1f}" if peak else "– | –"
        lines.append(
            f"| {case} | {milliseconds(ours)} | {milliseconds(theirs)} "
            f"| {statistics.median(ratios):.2f} ({min(ratios):.2f} – {max(ratios):.2f}) | {memory} |"
        )
    for case in failed:
        lines.append(f"| {case} | not timed: the values differ | | | | |")
    lines += [
        "",
        "| case | floor ms (bandwidth) | losskit median / floor | PyTorch median / floor "
        "| losskit best / floor | PyTorch best / floor |",
        "|---|---|---|---|---|---|",
    ]
    # The best repetition beside the median: what each side's code does when the shared
    # machine leaves it alone (the median carries the other tenants' load).
    for case, floor in floors(cases, bandwidth):
        ours = [t * 1e3 for round_ in times[case] for t in round_[0]]
        theirs = [t * 1e3 for round_ in times[case] for t in round_[1]]
        lines.append(
            f"| {case} | {floor:.2f} | {statistics.median(ours) / floor:.1f} "
            f"| {statistics.median(theirs) / floor:.1f} | {min(ours) / floor:.1f} "
            f"| {min(theirs) / floor:.1f} |"
        )
    table = "\n".join(lines)
    print(table, flush=True)
    if markdown:
        temporary = markdown + ".tmp"
        with open(temporary, "w") as out:
            out.write(table + "\n")
        os.replace(temporary, markdown)


if __name__ == "__main__":
    main()
