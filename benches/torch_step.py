#!/usr/bin/env python3
"""The training steps of benches/train_step.rs and the matmul of benches/step_anatomy.rs in
PyTorch on the CPU, for comparison: one Adam step (lr 1e-3), batch 128, cross-entropy on
one-hot targets, f32; same thread count as the Rust side (RAYON_NUM_THREADS or the core count).

    python3 benches/torch_step.py        (BENCH_REPS=N to change the repetitions)

Also the CNN step of benches/conv.rs (batch 64, 1x28x28 -> conv 3x3 8 ch -> relu -> conv 3x3
stride 2 16 ch -> relu -> flatten -> linear 10, Adam lr 1e-3). `--serve-cnn` runs only that
step, once per line read from stdin, printing its phase times in seconds: benches/conv.rs
drives it so that both sides are timed interleaved, in one run.

Exits 0 with a message when torch is not importable.
"""
import os
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except Exception as e:  # noqa: BLE001
    print(f"torch_step.py: torch is not importable ({e.__class__.__name__}: {e}); skipping.")
    print("Install it with `pip install torch` (PyPI; CPU is enough) to run this comparison.")
    sys.exit(0)

B = 128


def threads():
    v = os.environ.get("RAYON_NUM_THREADS", "")
    if v.isdigit() and int(v) > 0:
        return int(v)
    return os.cpu_count() or 1


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def reps(default):
    v = os.environ.get("BENCH_REPS", "")
    return int(v) if v.isdigit() and int(v) > 0 else default


def compare(cases, warmup, n):
    """cases: list of (name, fn returning seconds). Interleaved, order rotated each round;
    ratio = median over rounds of case / case 0."""
    for _ in range(warmup):
        for _, f in cases:
            f()
    times = [[] for _ in cases]
    for r in range(n):
        for j in range(len(cases)):
            i = (j + r) % len(cases)
            times[i].append(cases[i][1]() * 1e3)
    out = []
    for i, (name, _) in enumerate(cases):
        ratios = [a / b for a, b in zip(times[i], times[0])]
        out.append((name, statistics.median(times[i]), min(times[i]), statistics.median(ratios)))
    return out


def table(title, stats):
    base = stats[0][0]
    print(f"### {title}\n")
    print(f"| case | median ms | min ms | ratio vs `{base}` (median of per-round ratios) |")
    print("|---|---:|---:|---:|")
    for name, med, mn, ratio in stats:
        print(f"| {name} | {med:.3f} | {mn:.3f} | {ratio:.2f} |")
    print()


def mlp(widths):
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def data():
    g = torch.Generator().manual_seed(9)
    x = torch.rand(B, 784, generator=g) * 4 - 2
    y = F.one_hot(torch.randint(0, 10, (B,), generator=g), 10).float()
    return x, y


def step_case(widths, log):
    torch.manual_seed(0)
    model = mlp(widths)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = data()

    def run():
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        log.append((t1 - t0, t2 - t1, t3 - t2))
        return t3 - t0

    return run


CNN_B = 64


def cnn_model():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(16 * 12 * 12, 10))


def cnn_case(log):
    torch.manual_seed(0)
    model = cnn_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(9)
    x = torch.rand(CNN_B, 1, 28, 28, generator=g) * 4 - 2
    y = F.one_hot(torch.randint(0, 10, (CNN_B,), generator=g), 10).float()

    def run():
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        log.append((t1 - t0, t2 - t1, t3 - t2))
        return t3 - t0

    return run


def serve_cnn():
    """Per line of stdin: `step` runs one CNN step and prints `forward backward update`
    seconds; `cpu N` runs N steps back to back and prints `wall cpu` seconds per step (CPU
    time of this process, which the machine's other load does not inflate)."""
    torch.set_num_threads(threads())
    log = []
    run = cnn_case(log)
    print(f"ready torch {torch.__version__} threads {torch.get_num_threads()}", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["cpu"]:
            n = int(words[1])
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                run()
            w1, c1 = time.perf_counter(), time.process_time()
            print(f"{(w1 - w0) / n!r} {(c1 - c0) / n!r}", flush=True)
        else:
            run()
            print(" ".join(repr(t) for t in log[-1]), flush=True)


def split_table(title, rows, warmup):
    print(f"### {title}\n")
    print("| case | forward (zero_grad + forward + loss) ms | backward ms | optimizer step ms | step ms (sum of medians) |")
    print("|---|---:|---:|---:|---:|")
    for name, log in rows:
        med = [statistics.median(p[k] for p in log[warmup:]) * 1e3 for k in range(3)]
        print(f"| {name} | {med[0]:.3f} | {med[1]:.3f} | {med[2]:.3f} | {sum(med):.3f} |")
    print()


def main():
    n_threads = threads()
    torch.set_num_threads(n_threads)
    print("# torch_step: one Adam step, batch 128, cross-entropy, f32 (PyTorch, CPU)\n")
    print(f"cpu: {cpu_model()}; cores: {os.cpu_count()}; torch threads: {torch.get_num_threads()}; "
          f"torch {torch.__version__}\n")
    warmup = 3
    logs = {}
    cases = []
    for widths, name in [([784, 256, 10], "784-256-10"), ([784, 1024, 10], "784-1024-10"),
                         ([784, 1024, 1024, 10], "784-1024-1024-10")]:
        logs[name] = []
        cases.append((f"PyTorch {name} + torch.optim.Adam", step_case(widths, logs[name])))
    # Each size is its own comparison; run them one after another, interleaving nothing across
    # sizes (the ratios would be meaningless).
    for (name, f), key in zip(cases, logs):
        s = compare([(name, f)], warmup, reps(40))
        table(f"{key}, one Adam step, batch 128", s)
    split_table("where the step's time goes (medians)",
                [(f"PyTorch {k}", v) for k, v in logs.items()], warmup)

    cnn_log = []
    s = compare([("PyTorch CNN + torch.optim.Adam", cnn_case(cnn_log))], warmup, reps(40))
    table("CNN (benches/conv.rs), one Adam step, batch 64", s)
    split_table("CNN: where the step's time goes (medians)", [("PyTorch CNN", cnn_log)], warmup)

    # The matmul of step_anatomy.rs: 128x784 by 784x1024.
    x = torch.rand(B, 784) * 4 - 2
    w = torch.rand(1024, 784) * 0.07 - 0.035
    lin = torch.nn.Linear(784, 1024)

    def fwd():
        t = time.perf_counter()
        with torch.no_grad():
            x @ w.t()
        return time.perf_counter() - t

    def fwd_bwd(input_grad):
        def run():
            t = time.perf_counter()
            xi = x.detach().requires_grad_(input_grad)
            wi = w.detach().requires_grad_(True)
            (xi @ wi.t()).sum().backward()
            return time.perf_counter() - t
        return run

    def lin_fwd_bwd():
        t = time.perf_counter()
        lin.zero_grad(set_to_none=True)
        lin(x).sum().backward()
        return time.perf_counter() - t

    s = compare([
        ("x W^T untraced (one matmul)", fwd),
        ("x W^T forward + backward, weight grad only (x is data)", fwd_bwd(False)),
        ("x W^T forward + backward, weight and input grads", fwd_bwd(True)),
        ("nn.Linear forward + backward (loss = sum)", lin_fwd_bwd),
    ], 5, reps(60))
    table("matmul 128x784 by 784x1024 (f32; one matmul = 206 MFLOP)", s)
    print(f"one matmul at the median: {2 * B * 784 * 1024 / (s[0][1] * 1e-3) * 1e-9:.1f} GFLOP/s\n")


if __name__ == "__main__":
    if "--serve-cnn" in sys.argv[1:]:
        serve_cnn()
    else:
        main()
