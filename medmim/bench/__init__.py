"""`medmim bench`: step time, memory, data throughput and inference time, with the machine."""
