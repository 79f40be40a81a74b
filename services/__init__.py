"""crossrec: a real-time recommender on Kafka (PredictionIO EventServer + Universal Recommender)."""
