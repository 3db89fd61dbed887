package analysis

// NaturalText is the built-in English sample on which the previous-token, first-token,
// self and entropy scores are computed when no prompt is given. It was written for
// attnscope: plain narrative prose, with names and phrases that come back, about 260 words.
const NaturalText = `The lighthouse keeper on the northern island kept a notebook of every ship that passed. Each morning she climbed the stairs, cleaned the great lens, and wrote the date at the top of a new page. Most days the page stayed nearly empty: a fishing boat, a ferry to the mainland, sometimes a yacht that had lost its way in the fog.
In the autumn of her fourth year a tall grey ship appeared on the horizon and did not move. It stayed there for three days. On the first day she wrote its shape in the notebook. On the second day she wrote its colour and the number of its masts. On the third day she took the small boat from the harbour and rowed out to meet it, because nobody else on the island seemed to care.
The grey ship was larger than any ship she had seen. Its deck was empty, its sails were folded, and a single lamp burned in a window near the stern. She called out, and a voice answered from inside: an old man who said he had been waiting for the wind to change. He asked her whether the lighthouse still kept its notebook of ships. She said that it did, and that his ship was written on three pages of it.
When the wind changed the next morning, the grey ship sailed south and was gone by noon. The keeper went back to her notebook and wrote one more line under the date: the grey ship left, and the sea is quiet again.
`
