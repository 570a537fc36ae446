"""bf16 steps with SDPA's math kernel (the code as it stands) vs SDPA's own choice (flash), interleaved, one process."""
import contextlib, time, sys, torch, numpy as np
from jepa_core.model import kernels
from jepa_core.bench.config import BenchConfig
from jepa_core.bench.data import BlockCycle, load_data
from jepa_core.bench.pretrain_speed import profile_config
from jepa_core.bench.workloads import our_workload
torch.set_num_threads(1)
cfg = profile_config(BenchConfig(), "cpu")
_, tok, blocks = load_data(cfg)
cycle = BlockCycle(blocks, cfg.batch)
real = kernels.sdpa_kernel
ws = {o: our_workload(cfg, tok, cycle, torch.device("cpu"), True, o) for o in ("hybrid", "mlm")}
res = {}
for r in range(int(sys.argv[1])):
    for o, w in ws.items():
        for kern in (("math", "flash") if r % 2 == 0 else ("flash", "math")):
            kernels.sdpa_kernel = real if kern == "math" else (lambda *a, **k: contextlib.nullcontext())
            w.step(0)
            for i in range(5):
                t = time.perf_counter(); w.step(i); res.setdefault((o, kern), []).append(time.perf_counter() - t)
for k, v in sorted(res.items()): print(k, f"median {np.median(v)*1e3:.1f} ms (n={len(v)})")
for o in ws: print(o, "flash/math", f"{np.median(res[(o,'flash')])/np.median(res[(o,'math')]):.3f}")
pair = (np.median(res[('hybrid','flash')]) + np.median(res[('mlm','flash')])) / (np.median(res[('hybrid','math')]) + np.median(res[('mlm','math')]))
print("pair flash/math", f"{pair:.3f}")
