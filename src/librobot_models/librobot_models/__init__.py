"""LibroBot models: pure Python + torch. Never imports rclpy or any *_msgs package."""
