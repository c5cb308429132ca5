"""The embedded miniature DataComp world: a generated pool, reference models, assets and eval suite."""
