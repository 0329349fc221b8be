"""The embedded emulator: moto with its fidelity fixes, and the demo. The only importer of moto."""
