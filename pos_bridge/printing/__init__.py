"""Receipt printing, split by concern (docs/receipts.md §5-§6).

How bytes reach a printer:

- `transports`: one `PrinterTransport` class per connection kind (tcp, usb, serial, file,
  and an in-memory one for tests), chosen once from the printer's URL by `transport_for()`.
  The printer service's `PrinterLink` (`pos_bridge.printer`) speaks only to that interface.
  **A new printer connection kind goes there**: its class, its URL form in
  `parse_connection()`, its entry in `TRANSPORTS`.

What ESC/POS bytes print, in three steps, each its own module:

- `tokenizer`: the byte stream split into text runs and whole commands (lengths only);
- `interpreter`: what a printer of a given profile prints from those tokens (`interpret()`,
  `Printout`), used by the staff preview (`pos_bridge.receipt_render.render_png`) and by the
  virtual network printer (`pos_bridge.virtual_printer`, which keeps only the device: socket,
  paper, cover, status answers);
- `raster`: a printout's layout and bit images, drawn as a picture only when asked.

Nothing in here imports the rest of `pos_bridge`: the printer service (`pos_bridge.printer`),
the receipts renderer and the virtual printer build on it, never the other way round.
"""
