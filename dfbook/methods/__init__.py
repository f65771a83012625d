"""Paper-specific networks, losses and protocols: one module per chapter, imported explicitly
(``from dfbook.methods import univfd``). No registry."""
