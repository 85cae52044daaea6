"""The production traffic mix, in the ml-loadtest weights-module contract."""

from tasks import Classify, Embed, Infer

production_weights = {
    Classify: 50,  # 50 % of requests
    Embed: 30,
    Infer: 20,
}
