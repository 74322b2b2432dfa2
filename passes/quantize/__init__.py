"""INT8 post-training quantization: calibration observers, per-channel weight quantization and
integer-only requantization, shared by the x86 and ASIC backends."""
