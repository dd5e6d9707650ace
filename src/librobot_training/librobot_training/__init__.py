"""LibroBot training: datasets, conversion from rosbag2, training and evaluation. No ROS needed."""
