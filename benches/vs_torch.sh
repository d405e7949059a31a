#!/usr/bin/env bash
# The crate's training step against PyTorch's, side by side: benches/torch_step.py and the
# train_step bench (BENCH_ONLY=sizes), run one after the other at each thread count, then the
# ratio crate / PyTorch of the median step times for 784-256-10, 784-1024-10 and
# 784-1024-1024-10, with the machine's load before and after each pair.
#
#   benches/vs_torch.sh                 (from the repository root or anywhere)
#
# Environment: THREADS (default "1 2"), REPEATS (rounds, default 2), BENCH_REPS (passed to
# both benches), OUT_DIR (where the raw outputs go, default target/vs_torch).
# The two run in separate processes, not interleaved: on a loaded machine repeat, and read the
# load columns. The crate's row of interest is "input as Data" (no input gradient); plain
# traced input and dfdx's own layers are printed for reference.
set -euo pipefail
cd "$(dirname "$0")/.."

threads=${THREADS:-"1 2"}
repeats=${REPEATS:-2}
out=${OUT_DIR:-target/vs_torch}
mkdir -p "$out"

if ! python3 -c "import torch" 2>/dev/null; then
    echo "vs_torch.sh: torch is not importable by python3; nothing to compare against."
    exit 0
fi
# Build before anything is timed.
cargo bench --bench train_step --no-run --quiet 2>/dev/null

summary() {
    python3 - "$@" <<'EOF'
import json, re, sys
torch_file, crate_file, threads, before, after, log = sys.argv[1:7]

def times(path, pattern):
    """Maps each model size to {case: (median ms, min ms)} for the tables whose title matches."""
    out, size = {}, None
    for line in open(path):
        if line.startswith("### "):
            m = re.match(pattern, line)
            size = m.group(1) if m else None
            continue
        if size and line.startswith("| ") and not line.startswith("| case"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            try:
                out.setdefault(size, {})[cells[0]] = (float(cells[1]), float(cells[2]))
            except (ValueError, IndexError):
                pass
    return out

torch = times(torch_file, r"### (\S+), one Adam step")
crate = times(crate_file, r"### \(a\) (\S+), one Adam step")
cols = [("dfdx-grow Mlp (input as Data) + optim::Adam", "crate, Data input"),
        ("dfdx-grow Mlp + optim::Adam", "crate, traced input"),
        ("dfdx nn::Linear + dfdx Adam", "dfdx layers + Adam")]
print(f"#### {threads} thread(s); load before: {before}; after: {after}\n")
head = " | ".join(f"{name} ms | / torch" for _, name in cols)
print(f"| model | PyTorch ms | {head} |")
print("|---|---:|" + "---:|---:|" * len(cols))
with open(log, "a") as f:
    for size in ["784-256-10", "784-1024-10", "784-1024-1024-10"]:
        t = next((v for k, v in torch.get(size, {}).items() if k.startswith("PyTorch")), None)
        cells = []
        for case, name in cols:
            c = crate.get(size, {}).get(case)
            both = c is not None and t is not None
            cells.append("-" if c is None else f"{c[0]:.3f} (min {c[1]:.3f})")
            cells.append("-" if not both else f"{c[0] / t[0]:.2f} (min {c[1] / t[1]:.2f})")
            if both:
                f.write(json.dumps({"threads": threads, "size": size, "case": name,
                                    "torch": t, "crate": c}) + "\n")
        ts = "-" if t is None else f"{t[0]:.3f} (min {t[1]:.3f})"
        print(f"| {size} | {ts} | " + " | ".join(cells) + " |")
print()
EOF
}

overall() {
    python3 - "$1" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
sizes = ["784-256-10", "784-1024-10", "784-1024-1024-10"]
order = ["crate, Data input", "crate, traced input",
         "dfdx layers + Adam"]
print("### all rounds: median of the per-round ratios of medians; ratio of the minima\n")
print("| threads | model | case | rounds | median ratio | min crate / min torch |")
print("|---:|---|---|---:|---:|---:|")
keys = sorted({(r["threads"], r["size"], r["case"]) for r in rows},
              key=lambda k: (k[0], sizes.index(k[1]), order.index(k[2])))
for th, size, case in keys:
    rs = [r for r in rows if (r["threads"], r["size"], r["case"]) == (th, size, case)]
    med = statistics.median(r["crate"][0] / r["torch"][0] for r in rs)
    mn = min(r["crate"][1] for r in rs) / min(r["torch"][1] for r in rs)
    print(f"| {th} | {size} | {case} | {len(rs)} | {med:.2f} | {mn:.2f} |")
print()
EOF
}

log="$out/ratios.jsonl"
: > "$log"
echo "# vs_torch: one Adam step, batch 128, f32 (medians; ratio = crate / PyTorch)"
echo
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); cores: $(nproc)"
echo
for round in $(seq 1 "$repeats"); do
    for th in $threads; do
        t_out="$out/torch_t${th}_r${round}.md"
        c_out="$out/train_step_t${th}_r${round}.md"
        before=$(uptime | sed 's/.*load average: //')
        RAYON_NUM_THREADS=$th python3 benches/torch_step.py > "$t_out" 2>"$out/torch_stderr.txt"
        RAYON_NUM_THREADS=$th BENCH_ONLY=sizes cargo bench --bench train_step --quiet \
            > "$c_out" 2>/dev/null
        after=$(uptime | sed 's/.*load average: //')
        echo "### round $round"
        echo
        summary "$t_out" "$c_out" "$th" "$before" "$after" "$log"
    done
done
overall "$log"
echo "raw outputs: $out/"
