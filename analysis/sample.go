package analysis

// NaturalText is the built-in English sample on which the previous-token, first-token,
// self and entropy scores are computed when no prompt is given. It was written for
// attnscope: plain narrative prose with phrases that come back, about 100 words (114
// GPT-2 tokens), short so that the census costs little more than the probe batch.
const NaturalText = `The lighthouse keeper on the northern island kept a notebook of every ship that passed. Each morning she climbed the stairs, cleaned the great lens, and wrote the date at the top of a new page. In the autumn of her fourth year a tall grey ship appeared on the horizon and stayed there for three days. On the first day she wrote its shape in the notebook. On the second day she wrote its colour and the number of its masts. On the third day she rowed out to meet it, and the grey ship sailed south before she reached it.
`
