"""losskit against PyTorch on the CPU, case by case, interleaved in one run.

Started by bench/peers/run, which builds the losskit side (bench/peers/losskit-peer) and this
script's virtual environment. Every case is forward + backward of a loss (or one Adam step of
a bundled model) and reads the loss and one gradient element back, on both sides. Each round
runs every case on losskit, then on PyTorch; the medians over all rounds are compared.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

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
STEP_CASES = ["cnn_step_b32", "unet_step_b16"]


def dice_loss(x, t, smooth_nr=1e-5, smooth_dr=1e-5):
    """MONAI's DiceLoss(softmax=True, to_onehot_y=True), mean over samples and classes."""
    c = x.shape[1]
    p = torch.softmax(x, 1)
    onehot = F.one_hot(t, c).movedim(-1, 1).to(p.dtype)
    intersection = (p * onehot).sum(2)
    denominator = p.sum(2) + onehot.sum(2)
    return (1 - (2 * intersection + smooth_nr) / (denominator + smooth_dr)).mean()


def loss_runner(name):
    kind, shape, indices = LOSS_CASES[name]
    n, c = shape[0], shape[1]
    s = 1
    for d in shape[2:]:
        s *= d
    g = torch.Generator().manual_seed(1)
    base = torch.randn(n, c, s, generator=g)
    if indices:
        target = torch.randint(0, c, (n, s), generator=g)
    else:
        target = torch.randn(n, c, s, generator=g)
    fn = {"ce": F.cross_entropy, "mse": F.mse_loss, "dice": dice_loss}[kind]

    def run():
        x = base.detach().requires_grad_()
        loss = fn(x, target)
        loss.backward()
        return loss.item() + x.grad.view(-1)[0].item()

    return run


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
    """crates/examples/src/models.rs's UNet."""

    def __init__(self, channels=1, classes=3, w=8):
        super().__init__()
        self.enc1, self.enc1b = block(channels, w), block(w, w)
        self.enc2, self.enc2b = block(w, 2 * w), block(2 * w, 2 * w)
        self.bottom, self.bottomb = block(2 * w, 4 * w), block(4 * w, 4 * w)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = block(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = block(2 * w, w)
        self.head = nn.Conv2d(w, classes, 1)

    def forward(self, x):
        e1 = self.enc1b(self.enc1(x))
        e2 = self.enc2b(self.enc2(F.max_pool2d(e1, 2)))
        b = self.bottomb(self.bottom(F.max_pool2d(e2, 2)))
        d2 = self.dec2(torch.cat([self.up2(b), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


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
        model, classes = UNet(), 3
        images = torch.randn(16, 1, 48, 48, generator=g)
        target = torch.randint(0, classes, (16, 48 * 48), generator=g)

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


def runner(name):
    return loss_runner(name) if name in LOSS_CASES else step_runner(name)


def peak_resident_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


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


def peak_of(command, request):
    """Peak memory of one run of a case, in a fresh process."""
    reply = subprocess.run(
        command, input=request + "\n", capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(reply.stdout.splitlines()[-1])["peak_bytes"]


def reps_for(case):
    # About a tenth of a second a side a round on this machine's size of case, and at least
    # five, so that a median over the rounds has enough samples to stand on.
    if case in STEP_CASES:
        return 5
    kind, shape, _ = LOSS_CASES[case]
    size = 1
    for d in shape:
        size *= d
    return max(5, min(200, int(2e6 // size)))


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
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)

    if args.peak:
        # Child mode: the PyTorch side of one case's peak memory.
        run = runner(args.peak)
        before = peak_resident_bytes()
        run()
        print(json.dumps({"case": args.peak, "peak_bytes": max(0, peak_resident_bytes() - before)}))
        return

    losskit = Losskit(args.losskit)
    cases = [c for c in losskit.ask("cases") if args.cases in c]
    torch_runners = {}
    times = {case: ([], []) for case in cases}
    for round_ in range(args.rounds):
        for case in cases:
            reps = reps_for(case)
            time.sleep(SETTLE_SECONDS)
            times[case][0].extend(losskit.ask(f"run {case} {reps}")["seconds"])
            if case not in torch_runners:
                torch_runners[case] = runner(case)
                for _ in range(2):
                    torch_runners[case]()
            run = torch_runners[case]
            time.sleep(SETTLE_SECONDS)
            for _ in range(reps):
                started = time.perf_counter()
                run()
                times[case][1].append(time.perf_counter() - started)
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    losskit.close()

    for case in cases:
        ratio = statistics.median(times[case][0]) / statistics.median(times[case][1])
        print(f"ratio {case} {ratio:.3f}", flush=True)
    header = (
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {threads} threads, "
        f"PyTorch {torch.__version__}, {args.rounds} interleaved rounds"
    )
    # The times first (printed and written), then memory: each case once more in a fresh
    # process per side, which takes a while.
    emit(args.markdown, header, cases, times, {})
    if args.no_memory:
        return
    peaks = {}
    for case in cases:
        try:
            peaks[case] = (
                peak_of([args.losskit], f"peak {case}"),
                peak_of([sys.executable, __file__, "--peak", case], ""),
            )
        except (subprocess.SubprocessError, ValueError, KeyError) as error:
            print(f"peak {case}: {error}", file=sys.stderr)
    emit(args.markdown, header, cases, times, peaks)


def emit(markdown, header, cases, times, peaks):
    lines = [
        header,
        "",
        "| case | losskit ms (min – median – max) | PyTorch ms (min – median – max) "
        "| losskit / PyTorch (median) | peak MiB losskit | peak MiB PyTorch |",
        "|---|---|---|---|---|---|",
    ]
    for case in cases:
        ours, theirs = times[case]
        ratio = statistics.median(ours) / statistics.median(theirs)
        peak = peaks.get(case)
        memory = f"{peak[0] / 2**20:.1f} | {peak[1] / 2**20:.1f}" if peak else "– | –"
        lines.append(
            f"| {case} | {milliseconds(ours)} | {milliseconds(theirs)} | {ratio:.2f} | {memory} |"
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
