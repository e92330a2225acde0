"""What the routes call: one module per resource. A route parses its parameters and
calls one function here; the SQL lives here (or in the library it calls), never in
`routes/`."""
