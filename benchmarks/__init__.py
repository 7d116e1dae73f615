"""The benchmark suite (not part of the engine ComfyUI imports): `python -m benchmarks --help`, from the repository
root. Results are written up in BENCHMARKS.md."""
