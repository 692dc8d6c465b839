"""The scanner service at the hardware (issue 15, docs/scanners.md): USB keyboard-wedge
scanners, serial scanners and cameras, each scan turned into one `store_contract.scans.Scan`.

`decode` reads codes from one image (zxing-cpp), `camera` watches an OpenCV source and sends
one scan per presentation, `codes` says which product a code stands for (every kind of
scanner uses it), `python -m pos_bridge.scanner` is the command.
"""
