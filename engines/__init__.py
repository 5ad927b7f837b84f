"""TensorRT engines built from the stage graphs: profiles over the class axis, precision, engine cache."""
