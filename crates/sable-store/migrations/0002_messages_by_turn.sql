-- A turn's reply is looked up by turn id (turn reads, waiting clients, deliveries).
CREATE INDEX messages_by_turn ON messages (turn_id, position);
