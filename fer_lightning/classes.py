"""Class names of FER2013, in the label order of the original csv."""

EMOTIONS: tuple[str, ...] = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
NUM_CLASSES = len(EMOTIONS)
IMAGE_SIZE = 48
