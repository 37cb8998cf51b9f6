"""Transfer benchmarks (detection, Places205 / iNat / VOC classification) and checkpoint conversion."""
