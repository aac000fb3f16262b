"""Callbacks: TensorBoard diagnostics and a plateau reducer that works with schedules."""
