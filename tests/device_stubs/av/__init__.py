"""Stand-in for PyAV (`av`) for tests/device_native_check.py on a machine without it: ComfyUI's nodes.py imports
its video types at start-up, and the check uses no video. benchmarks/gpu_session.sh puts this folder on PYTHONPATH
only when `import av` fails."""
