"""CommonPool: its schema, reading metadata (parquet + npz), webdataset shards, downloading."""
