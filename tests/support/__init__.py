"""What the tests share but are not tests: stand-ins for DAWs, daemon fixtures, tiny random models."""
