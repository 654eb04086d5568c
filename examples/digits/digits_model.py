"""The example's model: a small CNN for 8x8 digits, as a user would write one for GLO.

GLO calls `small_cnn(input_shape, num_classes)` -- named in the config as `digits_model:small_cnn`, found
through PYTHONPATH (`make example` puts examples/digits on it) -- and trains it with each candidate loss.
The last layer must be a softmax over the classes.
"""

import keras


def small_cnn(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    inp = keras.Input(input_shape)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(64, activation="relu")(h)
    out = keras.layers.Dense(num_classes, activation="softmax")(h)
    return keras.Model(inp, out, name="digits_small_cnn")
