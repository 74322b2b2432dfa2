"""The simulated edge-inference ASIC: an INT8 systolic array with scratchpads, a vector unit and
DRAM, described by a config; code generation to its instruction set and a bit-exact, timed
simulator."""
