"""Receipt printing, split by concern (docs/receipts.md §2-§3).

From ESC/POS bytes to paper, in three steps, each its own module:

- `tokenizer`: the byte stream split into text runs and whole commands (lengths only);
- `interpreter`: what a printer of a given profile prints from those tokens (`interpret()`,
  `Printout`), used by the staff preview (`pos_bridge.receipt_render.render_png`) and by the
  virtual network printer (`pos_bridge.virtual_printer`, which keeps only the device: socket,
  paper, cover, status answers);
- `raster`: a printout's layout and bit images, drawn as a picture only when asked.

Nothing in here imports the rest of `pos_bridge`: the printer service (`pos_bridge.printer`),
the receipts renderer and the virtual printer build on it, never the other way round.
"""
