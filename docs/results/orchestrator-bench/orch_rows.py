"""The orchestrator bench's per_candidate rows (3 runs each, median) for sizes and workloads given."""
import sys, os, tempfile, json, shutil
from pathlib import Path
sys.path.insert(0, os.getcwd())
os.environ.setdefault("GLO_BENCH_DB_SIZES", sys.argv[1])
from tests.bench import bench_orchestrator as bo
import time
sizes = [int(s) for s in sys.argv[1].split(",")]
wls = sys.argv[2].split(",")
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 3
print("load", os.getloadavg(), time.strftime("%H:%M:%S"), flush=True)
with tempfile.TemporaryDirectory() as tmp:
    for n in sizes:
        db = Path(tmp) / f"h{n}.db"; bo.fill_db(db, n)
        for w in wls:
            runs = []
            for r in range(reps):
                c = Path(tmp) / f"{n}-{w}-{r}.db"; shutil.copyfile(db, c)
                runs.append(bo.per_candidate(c, 4, False, w))
            runs.sort(key=lambda x: x["ms_per_candidate"])
            m = runs[len(runs)//2]
            print(json.dumps({"n": n, "workload": w, "all": [x["ms_per_candidate"] for x in runs],
                              "search": [x["search_ms_per_candidate"] for x in runs],
                              "orch": [x["orchestrator_ms_per_candidate"] for x in runs],
                              "median": {k: m[k] for k in ("ms_per_candidate", "search_ms_per_candidate", "orchestrator_ms_per_candidate", "candidates", "trained", "jobs")}}), flush=True)
print("load", os.getloadavg(), time.strftime("%H:%M:%S"), flush=True)
