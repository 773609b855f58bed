"""One module per dashboard page; each calls services only, the same ones the API routes call."""
