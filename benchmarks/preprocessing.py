"""Preprocessing benchmark: helpers.data against the reference solution's process_data.py, on the same file.

    python benchmarks/preprocessing.py                  # full size: 2,248,619 records (generated once, ~0.9 GB)
    python benchmarks/preprocessing.py --records 200000 # a quick run

Each implementation runs in its own child process, so its peak memory (max RSS from os.wait4) is its own. The
reference style, as REFERENCE.md describes it: json.loads of every line into one list, a regex punctuation strip,
then one json.dump of the whole list. Results go to outputs/benchmarks/preprocessing.json (full size) or
preprocessing_<records>.json (quick runs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from helpers.config import cpu_profile, paths
from helpers.data import preprocess
from helpers.synthetic import FULL_SIZE_RECORDS, write_sample

REFERENCE_PUNCTUATION = r"[^\w\s]"
RESULTS_FILE = "preprocessing.json"  # the full-size run; quick runs write preprocessing_<records>.json


def reference_style(input_path: Path, output_dir: Path) -> dict:
    """What process_data.py did: everything in memory, punctuation stripped before entities are decoded."""
    records = []
    with input_path.open(encoding="utf-8") as source:
        for line in source:
            records.append(json.loads(line))
    minimum = cpu_profile().min_description_chars
    processed = []
    for record in records:
        content = record["content"]
        if content and len(content) >= minimum:
            processed.append({"product": re.sub(REFERENCE_PUNCTUATION, "", record["title"]),
                              "description": re.sub(REFERENCE_PUNCTUATION, "", content)})
    output_dir.mkdir(parents=True, exist_ok=True)
    with (output_dir / "trn_processed.json").open("w", encoding="utf-8") as output:
        json.dump(processed, output, ensure_ascii=False)
    return {"read": len(records), "kept": len(processed)}


def ours(input_path: Path, output_dir: Path) -> dict:
    profile = cpu_profile()
    stats = preprocess(input_path, output_dir, min_description_chars=profile.min_description_chars,
                       heldout_fraction=profile.heldout_fraction)
    return {"read": stats["read"], "kept": stats["kept"]}


IMPLEMENTATIONS = {"reference": reference_style, "ours": ours}


def run_child(implementation: str, input_path: Path, output_dir: Path) -> None:
    """In the child process: run one implementation and print its timing as JSON."""
    started = time.perf_counter()
    counts = IMPLEMENTATIONS[implementation](input_path, output_dir)
    print(json.dumps({**counts, "seconds": time.perf_counter() - started}))


def measure(implementation: str, input_path: Path, output_dir: Path) -> dict:
    """Run one implementation in a fresh process; wall time inside it, peak memory of that process alone."""
    child = subprocess.Popen([sys.executable, __file__, "--child", implementation, "--input", str(input_path),
                              "--output", str(output_dir)], stdout=subprocess.PIPE, text=True)
    stdout = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{implementation} failed with exit status {child.returncode}")
    result = json.loads(stdout)
    result["records_per_second"] = result["read"] / result["seconds"]
    result["peak_memory_mb"] = usage.ru_maxrss / 1024  # Linux reports kilobytes
    return result


def benchmark_input(records: int) -> Path:
    if records == FULL_SIZE_RECORDS:
        return paths().full_size_data
    return paths().benchmarks / "tmp" / f"trn_{records}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=FULL_SIZE_RECORDS)
    parser.add_argument("--child", choices=sorted(IMPLEMENTATIONS), help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        run_child(arguments.child, arguments.input, arguments.output)
        return

    input_path = benchmark_input(arguments.records)
    if not input_path.is_file():
        print(f"generating {arguments.records:,} records into {input_path} (once)")
        started = time.perf_counter()
        write_sample(input_path, arguments.records, progress=True)
        print(f"generated in {time.perf_counter() - started:.0f} s")
    scratch = paths().benchmarks / "tmp"
    results = {
        "ours": measure("ours", input_path, scratch / "ours"),
        "reference": measure("reference", input_path, scratch / "reference"),
        # Memory that does not grow with the file: the same code on the 5,000-record committed sample.
        "ours_on_committed_sample": measure("ours", paths().raw_sample, scratch / "ours_sample"),
    }
    for name in ("ours", "reference", "ours_sample"):  # outputs are ~1 GB at full size; the input is kept for reruns
        shutil.rmtree(scratch / name, ignore_errors=True)
    report = {
        "command": f"python benchmarks/preprocessing.py --records {arguments.records}",
        "input_records": arguments.records,
        "input_mb": input_path.stat().st_size / 2**20,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "speedup": results["ours"]["records_per_second"] / results["reference"]["records_per_second"],
        "memory_ratio": results["reference"]["peak_memory_mb"] / results["ours"]["peak_memory_mb"],
        "results": results,
    }
    results_path = paths().benchmarks / (RESULTS_FILE if arguments.records == FULL_SIZE_RECORDS
                                         else f"preprocessing_{arguments.records}.json")
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{arguments.records:,} records, {report['input_mb']:.0f} MB")
    print(f"{'implementation':28} {'records read':>13} {'kept':>10} {'seconds':>8} {'records/s':>11} {'peak MB':>8}")
    for name, result in results.items():
        print(f"{name:28} {result['read']:>13,} {result['kept']:>10,} {result['seconds']:>8.1f} "
              f"{result['records_per_second']:>11,.0f} {result['peak_memory_mb']:>8,.0f}")
    print(f"speed-up {report['speedup']:.1f}x (target 10x), reference uses {report['memory_ratio']:.0f}x the memory")
    print(f"results: {results_path}")


if __name__ == "__main__":
    main()
