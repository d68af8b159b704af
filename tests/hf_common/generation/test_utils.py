"""`GenerationTesterMixin`: the generation checks of transformers' tests/generation/test_utils.py, written
here for decoder-only language models.

test_modeling_common.py imports this module; transformers' own file is not in its source distribution
(only in its repository), so this project keeps its own version of the checks a user of `generate()`
relies on: every decoding mode runs and returns outputs of the documented shapes, the KV cache is in
the standard format and changes nothing, left padding changes nothing, generation continues from a
returned cache, from input embeddings, and assisted / prompt-lookup decoding match greedy search.
"""

import copy
import inspect

import torch
from transformers import GenerationMixin
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput

from futuretoken.hf.modeling import CACHE_FIELD


class GenerationTesterMixin:
    max_new_tokens = 3

    # --- helpers -------------------------------------------------------------------------------
    def prepare_config_and_inputs_for_generate(self, batch_size=2):
        """Common inputs, left-padded as a tokenizer pads for generation (the last row has two pads), without
        eos (so every call runs to max_new_tokens) and with a pad token."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        ids = inputs["input_ids"][:batch_size]
        mask = torch.ones_like(ids)
        if batch_size > 1:
            mask[-1, :2] = 0
        inputs = {"input_ids": ids, "attention_mask": mask}
        config.pad_token_id = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
        config.eos_token_id = None
        return config, inputs

    def _models(self, config):
        for model_class in self.all_generative_model_classes:
            yield model_class(copy.deepcopy(config)).eval()

    def _generate(self, model, inputs, **kwargs):
        kwargs.setdefault("max_new_tokens", self.max_new_tokens)
        with torch.no_grad():
            return model.generate(**inputs, **kwargs)

    def _check_outputs(self, output, config, prompt_len, batch, use_cache, beams=1):
        """Shapes of scores, logits, hidden states, attentions and past_key_values of a dict output."""
        steps = output.sequences.shape[1] - prompt_len
        rows = batch * beams
        self.assertEqual(len(output.scores), steps)
        for scores in (output.scores, output.logits):
            self.assertEqual([s.shape for s in scores], [(rows, config.vocab_size)] * steps)
        for step, (hidden, attentions) in enumerate(zip(output.hidden_states, output.attentions)):
            # Without a cache every step re-encodes the whole sequence; with one, only the new token.
            new = prompt_len if step == 0 or not use_cache else 1
            seen = prompt_len + step
            query = seen if not use_cache else new
            self.assertEqual([h.shape for h in hidden], [(rows, query, config.hidden_size)] * (config.n_layer + 1))
            self.assertEqual([a.shape for a in attentions],
                             [(rows, config.num_attention_heads, query, seen)] * config.n_layer)
        self.assertEqual(len(output.hidden_states), steps)
        if use_cache:
            self._check_cache(output.past_key_values, config, rows, output.sequences.shape[1] - 1)
        else:
            self.assertIsNone(output.past_key_values)

    def _check_cache(self, cache, config, rows, length):
        self.assertIsInstance(cache, Cache)
        self.assertEqual(len(cache.layers), config.n_layer)
        shape = (rows, config.num_attention_heads, length, config.hidden_size // config.num_attention_heads)
        for layer in cache.layers:
            self.assertEqual((layer.keys.shape, layer.values.shape), (shape, shape))

    def _dict_kwargs(self, use_cache):
        return dict(return_dict_in_generate=True, output_scores=True, output_logits=True, output_hidden_states=True,
                    output_attentions=True, use_cache=use_cache)

    # --- decoding modes ------------------------------------------------------------------------
    def test_inherits_generation_mixin(self):
        for model_class in self.all_generative_model_classes:
            self.assertTrue(any(GenerationMixin in base.__bases__ for base in model_class.__mro__))

    def test_greedy_generate(self):
        config, inputs = self.prepare_config_and_inputs_for_generate()
        for model in self._models(config):
            out = self._generate(model, inputs, do_sample=False)
            self.assertEqual(out.shape, (2, inputs["input_ids"].shape[1] + self.max_new_tokens))

    def test_greedy_generate_dict_outputs(self):
        for use_cache in (False, True):
            config, inputs = self.prepare_config_and_inputs_for_generate()
            for model in self._models(config):
                out = self._generate(model, inputs, do_sample=False, **self._dict_kwargs(use_cache))
                self.assertIsInstance(out, GenerateDecoderOnlyOutput)
                self._check_outputs(out, config, inputs["input_ids"].shape[1], 2, use_cache)

    def test_greedy_generate_with_and_without_cache_agree(self):
        config, inputs = self.prepare_config_and_inputs_for_generate()
        for model in self._models(config):
            outs = [self._generate(model, inputs, do_sample=False, max_new_tokens=8, use_cache=c) for c in (False, True)]
            self.assertEqual(outs[0].tolist(), outs[1].tolist())

    def test_sample_generate(self):
        config, inputs = self.prepare_config_and_inputs_for_generate()
        for model in self._models(config):
            torch.manual_seed(0)
            out = self._generate(model, inputs, do_sample=True, top_k=10, top_p=0.7, temperature=0.7,
                                 num_return_sequences=2, **self._dict_kwargs(False))
            self.assertEqual(out.sequences.shape, (4, inputs["input_ids"].shape[1] + self.max_new_tokens))
            self._check_outputs(out, config, inputs["input_ids"].shape[1], 4, use_cache=False)

    def test_beam_search_generate_dict_output(self):
        for use_cache in (False, True):
            config, inputs = self.prepare_config_and_inputs_for_generate()
            for model in self._models(config):
                out = self._generate(model, inputs, do_sample=False, num_beams=2, num_return_sequences=2,
                                     length_penalty=2.0, **self._dict_kwargs(use_cache))
                self.assertIsInstance(out, GenerateBeamDecoderOnlyOutput)
                self.assertEqual(out.sequences.shape, (4, inputs["input_ids"].shape[1] + self.max_new_tokens))
                self.assertEqual(len(out.scores), self.max_new_tokens)
                self.assertEqual(out.scores[0].shape, (4, config.vocab_size))
                if use_cache:
                    self.assertIsInstance(out.past_key_values, Cache)

    def test_beam_sample_generate(self):
        config, inputs = self.prepare_config_and_inputs_for_generate()
        for model in self._models(config):
            torch.manual_seed(0)
            out = self._generate(model, inputs, do_sample=True, num_beams=2, top_k=10)
            self.assertEqual(out.shape, (2, inputs["input_ids"].shape[1] + self.max_new_tokens))

    def test_generate_without_input_ids(self):
        config, _ = self.prepare_config_and_inputs_for_generate()
        config.pad_token_id = None  # else it equals bos and the inferred attention mask would be all zeros
        for model in self._models(config):
            out = self._generate(model, {}, do_sample=False)
            self.assertEqual(out.shape, (1, 1 + self.max_new_tokens))

    def test_assisted_decoding_matches_greedy_search(self):
        """The model assisted by itself (all drafts accepted) and by a random model (drafts rejected)."""
        config, inputs = self.prepare_config_and_inputs_for_generate(batch_size=1)
        for model in self._models(config):
            kwargs = dict(do_sample=False, max_new_tokens=6, **self._dict_kwargs(True))
            greedy = self._generate(model, inputs, **kwargs)
            for assistant in (model, type(model)(copy.deepcopy(config)).eval()):
                assistant.generation_config.num_assistant_tokens = 2
                assistant.generation_config.num_assistant_tokens_schedule = "constant"
                assisted = self._generate(model, inputs, assistant_model=assistant, **kwargs)
                self.assertEqual(assisted.sequences.tolist(), greedy.sequences.tolist())

    def test_prompt_lookup_decoding_matches_greedy_search(self):
        config, inputs = self.prepare_config_and_inputs_for_generate(batch_size=1)
        for model in self._models(config):
            greedy = self._generate(model, inputs, do_sample=False, max_new_tokens=6)
            lookup = self._generate(model, inputs, do_sample=False, max_new_tokens=6, prompt_lookup_num_tokens=2)
            self.assertEqual(lookup.tolist(), greedy.tolist())

    # --- inputs, padding, caches ----------------------------------------------------------------
    def test_left_padding_compatibility(self):
        """32 left pads (masked) change neither the next-token logits nor greedy continuations."""
        config, inputs = self.prepare_config_and_inputs_for_generate()
        ids, mask = inputs["input_ids"], torch.ones_like(inputs["input_ids"])
        pad = torch.full((ids.shape[0], 32), config.pad_token_id)
        padded = {"input_ids": torch.cat([pad, ids], 1), "attention_mask": torch.cat([torch.zeros_like(pad), mask], 1)}
        for model in self._models(config):
            with torch.no_grad():
                plain = model(input_ids=ids, attention_mask=mask).logits[:, -1]
                with_pads = model(**padded).logits[:, -1]
            torch.testing.assert_close(plain, with_pads, rtol=1e-5, atol=1e-5)
            a = self._generate(model, {"input_ids": ids, "attention_mask": mask}, do_sample=False, max_new_tokens=5)
            b = self._generate(model, padded, do_sample=False, max_new_tokens=5)
            self.assertEqual(a[:, -5:].tolist(), b[:, -5:].tolist())

    def test_past_key_values_format(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        for model in self._models(config):
            with torch.no_grad():
                out = model(**inputs, use_cache=True)
            self._check_cache(out.past_key_values, config, *inputs["input_ids"].shape)

    def test_generate_continue_from_past_key_values(self):
        config, inputs = self.prepare_config_and_inputs_for_generate()
        for model in self._models(config):
            kwargs = dict(do_sample=False, return_dict_in_generate=True, use_cache=True)
            full = self._generate(model, inputs, max_new_tokens=4, **kwargs)
            first = self._generate(model, inputs, max_new_tokens=3, **kwargs)
            mask = torch.nn.functional.pad(inputs["attention_mask"], (0, 3), value=1)
            cont = self._generate(model, {"input_ids": first.sequences, "attention_mask": mask}, max_new_tokens=1,
                                  past_key_values=first.past_key_values, **kwargs)
            self.assertEqual(cont.sequences.tolist(), full.sequences.tolist())
            for a, b in zip(cont.past_key_values.layers, full.past_key_values.layers):
                torch.testing.assert_close(a.keys, b.keys)

    def test_generate_from_inputs_embeds(self):
        config, inputs = self.prepare_config_and_inputs_for_generate()
        for model in self._models(config):
            if "inputs_embeds" not in inspect.signature(model.forward).parameters:
                continue
            ids = inputs["input_ids"]
            kwargs = dict(do_sample=False, max_new_tokens=5, return_dict_in_generate=True, output_scores=True,
                          attention_mask=inputs["attention_mask"])
            from_ids = self._generate(model, {"input_ids": ids}, **kwargs)
            embeds = model.get_input_embeddings()(ids)
            from_embeds = self._generate(model, {"inputs_embeds": embeds}, **kwargs)
            self.assertEqual(from_embeds.sequences.tolist(), from_ids.sequences[:, ids.shape[1]:].tolist())
            other = self._generate(model, {"inputs_embeds": torch.rand_like(embeds)}, **kwargs)
            self.assertFalse(torch.allclose(other.scores[0], from_embeds.scores[0]))

    def test_generate_methods_with_logits_to_keep(self):
        config, inputs = self.prepare_config_and_inputs_for_generate()
        for model in self._models(config):
            if "logits_to_keep" not in inspect.signature(model.forward).parameters:
                continue
            every = self._generate(model, inputs, do_sample=False, max_new_tokens=6, logits_to_keep=0)
            last = self._generate(model, inputs, do_sample=False, max_new_tokens=6)
            self.assertEqual(every.tolist(), last.tolist())

    def test_prepare_inputs_for_generation_kwargs_forwards(self):
        """Keyword arguments given to generate reach forward (the issue: output flags used to be dropped)."""
        config, inputs = self.prepare_config_and_inputs_for_generate()
        for model in self._models(config):
            prepared = model.prepare_inputs_for_generation(  # the cache under the installed version's name
                inputs["input_ids"], **{CACHE_FIELD: DynamicCache()}, attention_mask=inputs["attention_mask"],
                output_hidden_states=True, output_attentions=True, use_cache=True, is_first_iteration=True)
            for key in ("input_ids", "attention_mask", CACHE_FIELD, "output_hidden_states", "output_attentions"):
                self.assertIn(key, prepared)
