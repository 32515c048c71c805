"""The data-preparation wing: source rows -> V-Zero rows (`convert`), and the sharded, resumable pipeline that writes
and publishes the dataset (`pipeline`, whose `open_dataset` the launcher also reads its data with).
`scripts/prepare_data.py` is its command line; the trainer never imports it."""
