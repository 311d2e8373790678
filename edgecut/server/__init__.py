"""The tailoring side: multi-task models (mtl), the CUT engine (cut), and the fleet service."""
