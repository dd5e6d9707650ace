"""LibroBot policy node: thin rclpy wiring over pure helpers (conversions, chunk scheduling)."""
