"""Historical market data: the recorder (every book event and trade of the configured
markets, to partitioned Parquet: ``astra.tape``), queries over the record, replay in the live
WebSocket schema, export. Import the modules you need (``astra.history.recorder`` …): pyarrow
loads only with them."""

__all__: list[str] = []
