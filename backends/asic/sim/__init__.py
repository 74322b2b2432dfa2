"""The ASIC simulator: a functional layer over explicit DRAM/SRAM byte arrays and a timing layer
with one in-order queue per engine."""
