"""What runs at the hardware: device clients for lanes, printers, scanners and kiosks."""
