<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE TS>
<TS version="2.1" language="pt_BR" sourcelanguage="en">
<context>
    <name>CompareView</name>
    <message>
        <location filename="../compare_view.py" line="42"/>
        <source>Compare models</source>
        <translation>Comparar modelos</translation>
    </message>
    <message>
        <location filename="../compare_view.py" line="45"/>
        <source>no second model</source>
        <translation>nenhum segundo modelo</translation>
    </message>
    <message>
        <location filename="../compare_view.py" line="46"/>
        <source>Choose model…</source>
        <translation>Escolher modelo…</translation>
    </message>
    <message>
        <location filename="../compare_view.py" line="53"/>
        <location filename="../compare_view.py" line="133"/>
        <source>class</source>
        <translation>classe</translation>
    </message>
    <message>
        <location filename="../compare_view.py" line="53"/>
        <source>first %</source>
        <translation>primeiro %</translation>
    </message>
    <message>
        <location filename="../compare_view.py" line="53"/>
        <source>second %</source>
        <translation>segundo %</translation>
    </message>
    <message>
        <location filename="../compare_view.py" line="54"/>
        <location filename="../compare_view.py" line="134"/>
        <source>gap (points)</source>
        <translation>diferença (p.p.)</translation>
    </message>
    <message>
        <location filename="../compare_view.py" line="73"/>
        <source>opening {name}…</source>
        <translation>abrindo {name}…</translation>
    </message>
    <message>
        <location filename="../compare_view.py" line="92"/>
        <source>Compare with model</source>
        <translation>Comparar com o modelo</translation>
    </message>
    <message>
        <location filename="../compare_view.py" line="93"/>
        <source>ONNX models (*.onnx);;All files (*)</source>
        <translation>Modelos ONNX (*.onnx);;Todos os arquivos (*)</translation>
    </message>
    <message>
        <location filename="../compare_view.py" line="105"/>
        <source>model</source>
        <translation>modelo</translation>
    </message>
    <message>
        <location filename="../compare_view.py" line="106"/>
        <source>first: {model}</source>
        <translation>primeiro: {model}</translation>
    </message>
    <message>
        <location filename="../compare_view.py" line="110"/>
        <source>second: {model}</source>
        <translation>segundo: {model}</translation>
    </message>
    <message>
        <location filename="../compare_view.py" line="115"/>
        <source>cannot open {name}: {message}</source>
        <translation>não foi possível abrir {name}: {message}</translation>
    </message>
    <message>
        <location filename="../compare_view.py" line="121"/>
        <source>Draw a digit</source>
        <translation>Desenhe um dígito</translation>
    </message>
</context>
<context>
    <name>Comparison</name>
    <message>
        <location filename="../comparison.py" line="121"/>
        <source>{name} failed on this drawing: {error}</source>
        <translation>{name} falhou neste desenho: {error}</translation>
    </message>
    <message>
        <location filename="../comparison.py" line="124"/>
        <source>nothing to compare yet</source>
        <translation>nada para comparar ainda</translation>
    </message>
    <message>
        <location filename="../comparison.py" line="125"/>
        <source> (the models have different numbers of classes)</source>
        <translation> (os modelos têm números diferentes de classes)</translation>
    </message>
    <message>
        <location filename="../comparison.py" line="129"/>
        <source>disagree: {first} says {first_answer}, {second} says {second_answer}</source>
        <translation>discordam: {first} diz {first_answer}, {second} diz {second_answer}</translation>
    </message>
    <message>
        <location filename="../comparison.py" line="134"/>
        <source>{points} points on {label}</source>
        <translation>{points} pontos em {label}</translation>
    </message>
    <message>
        <location filename="../comparison.py" line="137"/>
        <source>same answer ({answer}), but probabilities differ by up to {gap}</source>
        <translation>mesma resposta ({answer}), mas as probabilidades diferem em até {gap}</translation>
    </message>
    <message>
        <location filename="../comparison.py" line="139"/>
        <source>agree: both say {answer} (largest gap {gap})</source>
        <translation>concordam: os dois dizem {answer} (maior diferença: {gap})</translation>
    </message>
    <message>
        <location filename="../comparison.py" line="259"/>
        <source>cannot open</source>
        <translation>não foi possível abrir</translation>
    </message>
    <message>
        <location filename="../comparison.py" line="338"/>
        <source>{name}: {ms} ms per drawing, {kib} KiB</source>
        <translation>{name}: {ms} ms por desenho, {kib} KiB</translation>
    </message>
    <message>
        <location filename="../comparison.py" line="344"/>
        <source>{name} is {factor}x as fast</source>
        <translation>{name} é {factor}x mais rápido</translation>
    </message>
    <message>
        <location filename="../comparison.py" line="346"/>
        <source>{name} is {factor}x slower</source>
        <translation>{name} é {factor}x mais lento</translation>
    </message>
    <message>
        <location filename="../comparison.py" line="349"/>
        <source>its file is {share} of {name}&apos;s</source>
        <translation>o arquivo dele tem {share} do tamanho do de {name}</translation>
    </message>
</context>
<context>
    <name>Explain</name>
    <message>
        <location filename="../explain.py" line="32"/>
        <source>SmoothGrad</source>
        <translation>SmoothGrad</translation>
    </message>
    <message>
        <location filename="../explain.py" line="33"/>
        <source>Integrated Gradients</source>
        <translation>Gradientes Integrados</translation>
    </message>
    <message>
        <location filename="../explain.py" line="34"/>
        <source>Gradient × input</source>
        <translation>Gradiente × entrada</translation>
    </message>
    <message>
        <location filename="../explain.py" line="35"/>
        <source>Occlusion</source>
        <translation>Oclusão</translation>
    </message>
    <message>
        <location filename="../explain.py" line="66"/>
        <source>Why {target} and not {other}? ({method})</source>
        <translation>Por que {target} e não {other}? ({method})</translation>
    </message>
    <message>
        <location filename="../explain.py" line="68"/>
        <source>Why {target}? ({method})</source>
        <translation>Por que {target}? ({method})</translation>
    </message>
    <message>
        <location filename="../explain.py" line="253"/>
        <source>Could not explain the drawing: {error}</source>
        <translation>Não foi possível explicar o desenho: {error}</translation>
    </message>
</context>
<context>
    <name>ExplainBar</name>
    <message>
        <location filename="../overlay.py" line="77"/>
        <source>How the map is computed. SmoothGrad (default) passes the randomization and deletion sanity checks; gradient × input mostly mirrors the drawing; occlusion needs no gradients</source>
        <translation>Como o mapa é calculado. SmoothGrad (padrão) passa nos testes de sanidade de aleatorização e de remoção; gradiente × entrada em grande parte só reflete o desenho; oclusão dispensa gradientes</translation>
    </message>
    <message>
        <location filename="../overlay.py" line="83"/>
        <source>Explain the difference to another class: why this and not that?</source>
        <translation>Explicar a diferença para outra classe: por que esta e não aquela?</translation>
    </message>
    <message>
        <location filename="../overlay.py" line="88"/>
        <location filename="../overlay.py" line="129"/>
        <source>Explain: show which pixels pushed the prediction (X)</source>
        <translation>Explicar: mostrar quais pixels influenciaram a previsão (X)</translation>
    </message>
    <message>
        <location filename="../overlay.py" line="99"/>
        <source>and not</source>
        <translation>e não</translation>
    </message>
    <message>
        <location filename="../overlay.py" line="134"/>
        <location filename="../overlay.py" line="137"/>
        <source>towards {label}</source>
        <translation>a favor de {label}</translation>
    </message>
    <message>
        <location filename="../overlay.py" line="139"/>
        <source>against {label}</source>
        <translation>contra {label}</translation>
    </message>
    <message>
        <location filename="../overlay.py" line="141"/>
        <source>{title} · {ms} ms</source>
        <translation>{title} · {ms} ms</translation>
    </message>
</context>
<context>
    <name>Gallery</name>
    <message>
        <location filename="../teach_panel.py" line="53"/>
        <source>taught as {digit} · {date}</source>
        <translation>ensinado como {digit} · {date}</translation>
    </message>
</context>
<context>
    <name>InputPreview</name>
    <message>
        <location filename="../preview.py" line="23"/>
        <source>model input</source>
        <translation>entrada do modelo</translation>
    </message>
    <message>
        <location filename="../preview.py" line="26"/>
        <source>The image the model receives, one square per input pixel</source>
        <translation>A imagem que o modelo recebe, um quadrado por pixel de entrada</translation>
    </message>
    <message>
        <location filename="../preview.py" line="36"/>
        <source>model input {width}×{height}</source>
        <translation>entrada do modelo {width}×{height}</translation>
    </message>
</context>
<context>
    <name>Inspector</name>
    <message>
        <location filename="../activations.py" line="573"/>
        <location filename="../activations.py" line="613"/>
        <source>Hover over a cell to read its value</source>
        <translation>Passe o mouse sobre uma célula para ler o valor</translation>
    </message>
    <message>
        <location filename="../activations.py" line="575"/>
        <source>◀ Previous map</source>
        <translation>◀ Mapa anterior</translation>
    </message>
    <message>
        <location filename="../activations.py" line="578"/>
        <source>Next map ▶</source>
        <translation>Próximo mapa ▶</translation>
    </message>
    <message>
        <location filename="../activations.py" line="653"/>
        <source>%1 %2 %3 — map %4 of %5</source>
        <translation>%1 %2 %3 — mapa %4 de %5</translation>
    </message>
    <message>
        <location filename="../activations.py" line="655"/>
        <source>map %1 of %2</source>
        <translation>mapa %1 de %2</translation>
    </message>
    <message>
        <location filename="../activations.py" line="674"/>
        <source>%1 %2 %3 — %4 values</source>
        <translation>%1 %2 %3 — %4 valores</translation>
    </message>
    <message>
        <location filename="../activations.py" line="689"/>
        <source>No weights</source>
        <translation>Sem pesos</translation>
    </message>
    <message>
        <location filename="../activations.py" line="698"/>
        <source>Weights %1: %2 (%3 … %4)</source>
        <translation>Pesos %1: %2 (%3 … %4)</translation>
    </message>
    <message>
        <location filename="../activations.py" line="712"/>
        <source>Receptive field: unknown for this node</source>
        <translation>Campo receptivo: desconhecido para este nó</translation>
    </message>
    <message>
        <location filename="../activations.py" line="716"/>
        <source>Unit (%1, %2) sees input rows %3–%4, columns %5–%6</source>
        <translation>A unidade (%1, %2) vê as linhas %3–%4 e as colunas %5–%6 da entrada</translation>
    </message>
</context>
<context>
    <name>LegendBar</name>
    <message>
        <location filename="../overlay.py" line="43"/>
        <source>against</source>
        <translation>contra</translation>
    </message>
    <message>
        <location filename="../overlay.py" line="44"/>
        <source>towards</source>
        <translation>a favor</translation>
    </message>
</context>
<context>
    <name>MainWindow</name>
    <message>
        <location filename="../window.py" line="151"/>
        <source>{count} examples taught</source>
        <translation>{count} exemplos ensinados</translation>
    </message>
    <message>
        <location filename="../window.py" line="217"/>
        <source>Cancelled opening {name}</source>
        <translation>Abertura de {name} cancelada</translation>
    </message>
    <message>
        <location filename="../window.py" line="236"/>
        <source>&amp;Open model…</source>
        <translation>&amp;Abrir modelo…</translation>
    </message>
    <message>
        <location filename="../window.py" line="237"/>
        <source>Open an ONNX model (Ctrl+O)</source>
        <translation>Abrir um modelo ONNX (Ctrl+O)</translation>
    </message>
    <message>
        <location filename="../window.py" line="238"/>
        <source>Open &amp;drawing…</source>
        <translation>Abrir &amp;desenho…</translation>
    </message>
    <message>
        <location filename="../window.py" line="239"/>
        <source>&amp;Save drawing…</source>
        <translation>&amp;Salvar desenho…</translation>
    </message>
    <message>
        <location filename="../window.py" line="240"/>
        <source>&amp;Quit</source>
        <translation>Sai&amp;r</translation>
    </message>
    <message>
        <location filename="../window.py" line="241"/>
        <source>&amp;Undo</source>
        <translation>Des&amp;fazer</translation>
    </message>
    <message>
        <location filename="../window.py" line="242"/>
        <source>Undo the last stroke (Ctrl+Z)</source>
        <translation>Desfazer o último traço (Ctrl+Z)</translation>
    </message>
    <message>
        <location filename="../window.py" line="243"/>
        <source>&amp;Redo</source>
        <translation>&amp;Refazer</translation>
    </message>
    <message>
        <location filename="../window.py" line="244"/>
        <source>Redo (Ctrl+Shift+Z / Ctrl+Y)</source>
        <translation>Refazer (Ctrl+Shift+Z / Ctrl+Y)</translation>
    </message>
    <message>
        <location filename="../window.py" line="245"/>
        <source>&amp;Clear</source>
        <translation>&amp;Limpar</translation>
    </message>
    <message>
        <location filename="../window.py" line="246"/>
        <source>Clear the canvas (Esc / Delete); undoable</source>
        <translation>Limpar a tela (Esc / Delete); pode ser desfeito</translation>
    </message>
    <message>
        <location filename="../window.py" line="247"/>
        <source>&amp;Eraser</source>
        <translation>&amp;Borracha</translation>
    </message>
    <message>
        <location filename="../window.py" line="248"/>
        <source>Toggle the eraser (E)</source>
        <translation>Ligar/desligar a borracha (E)</translation>
    </message>
    <message>
        <location filename="../window.py" line="249"/>
        <source>Thinner pen</source>
        <translation>Caneta mais fina</translation>
    </message>
    <message>
        <location filename="../window.py" line="250"/>
        <source>Thinner pen ([)</source>
        <translation>Caneta mais fina ([)</translation>
    </message>
    <message>
        <location filename="../window.py" line="251"/>
        <source>Thicker pen</source>
        <translation>Caneta mais grossa</translation>
    </message>
    <message>
        <location filename="../window.py" line="252"/>
        <source>Thicker pen (])</source>
        <translation>Caneta mais grossa (])</translation>
    </message>
    <message>
        <location filename="../window.py" line="253"/>
        <source>&amp;Auto-detect scaling</source>
        <translation>&amp;Detectar escala automaticamente</translation>
    </message>
    <message>
        <location filename="../window.py" line="254"/>
        <source>Try every input scaling on 50 MNIST digits and keep the best (Ctrl+D)</source>
        <translation>Testar todas as escalas de entrada em 50 dígitos do MNIST e ficar com a melhor (Ctrl+D)</translation>
    </message>
    <message>
        <location filename="../window.py" line="258"/>
        <source>Scaling {code}: {description}</source>
        <translation>Escala {code}: {description}</translation>
    </message>
    <message>
        <location filename="../window.py" line="262"/>
        <source>&amp;Activations</source>
        <translation>&amp;Ativações</translation>
    </message>
    <message>
        <location filename="../window.py" line="264"/>
        <source>&amp;Graph</source>
        <translation>&amp;Grafo</translation>
    </message>
    <message>
        <location filename="../window.py" line="266"/>
        <source>Model &amp;summary</source>
        <translation>&amp;Resumo do modelo</translation>
    </message>
    <message>
        <location filename="../window.py" line="268"/>
        <source>E&amp;xplain: why this digit?</source>
        <translation>E&amp;xplicar: por que este dígito?</translation>
    </message>
    <message>
        <location filename="../window.py" line="270"/>
        <source>Show which pixels pushed the prediction towards the class (X); click a bar to explain that class</source>
        <translation>Mostrar quais pixels levaram a previsão para a classe (X); clique numa barra para explicar essa classe</translation>
    </message>
    <message>
        <location filename="../window.py" line="272"/>
        <source>It&apos;s a {digit}</source>
        <translation>É um {digit}</translation>
    </message>
    <message>
        <location filename="../window.py" line="274"/>
        <source>Label the drawing {digit} and keep it as your example ({digit})</source>
        <translation>Rotular o desenho como {digit} e guardá-lo como seu exemplo ({digit})</translation>
    </message>
    <message>
        <location filename="../window.py" line="277"/>
        <source>&amp;Personalize on my examples</source>
        <translation>&amp;Personalizar com meus exemplos</translation>
    </message>
    <message>
        <location filename="../window.py" line="279"/>
        <source>&amp;About digitscope</source>
        <translation>&amp;Sobre o digitscope</translation>
    </message>
    <message>
        <location filename="../window.py" line="280"/>
        <source>&amp;Compare with…</source>
        <translation>&amp;Comparar com…</translation>
    </message>
    <message>
        <location filename="../window.py" line="281"/>
        <source>This model and another one side by side (Ctrl+Shift+C)</source>
        <translation>Este modelo e outro lado a lado (Ctrl+Shift+C)</translation>
    </message>
    <message>
        <location filename="../window.py" line="284"/>
        <source>&amp;File</source>
        <translation>&amp;Arquivo</translation>
    </message>
    <message>
        <location filename="../window.py" line="286"/>
        <source>Open &amp;recent</source>
        <translation>Abrir &amp;recente</translation>
    </message>
    <message>
        <location filename="../window.py" line="292"/>
        <source>&amp;Edit</source>
        <translation>&amp;Editar</translation>
    </message>
    <message>
        <location filename="../window.py" line="296"/>
        <source>&amp;Model</source>
        <translation>&amp;Modelo</translation>
    </message>
    <message>
        <location filename="../window.py" line="303"/>
        <source>&amp;View</source>
        <translation>E&amp;xibir</translation>
    </message>
    <message>
        <location filename="../window.py" line="307"/>
        <source>&amp;Language</source>
        <translation>&amp;Idioma</translation>
    </message>
    <message>
        <location filename="../window.py" line="312"/>
        <source>&amp;Help</source>
        <translation>Aj&amp;uda</translation>
    </message>
    <message>
        <location filename="../window.py" line="320"/>
        <source>System default</source>
        <translation>Padrão do sistema</translation>
    </message>
    <message>
        <location filename="../window.py" line="333"/>
        <source>The language changes when digitscope starts again</source>
        <translation>O idioma muda quando o digitscope for aberto de novo</translation>
    </message>
    <message>
        <location filename="../window.py" line="346"/>
        <source>Pen</source>
        <translation>Caneta</translation>
    </message>
    <message>
        <location filename="../window.py" line="350"/>
        <source>Pen width ([ and ])</source>
        <translation>Espessura da caneta ([ e ])</translation>
    </message>
    <message>
        <location filename="../window.py" line="364"/>
        <source>Input scaling</source>
        <translation>Escala da entrada</translation>
    </message>
    <message>
        <location filename="../window.py" line="368"/>
        <source>How pixel values are scaled for this model (remembered per model)</source>
        <translation>Como os valores dos pixels são escalados para este modelo (lembrado por modelo)</translation>
    </message>
    <message>
        <location filename="../window.py" line="388"/>
        <source>Activations</source>
        <translation>Ativações</translation>
    </message>
    <message>
        <location filename="../window.py" line="389"/>
        <source>Graph</source>
        <translation>Grafo</translation>
    </message>
    <message>
        <location filename="../window.py" line="390"/>
        <source>Model</source>
        <translation>Modelo</translation>
    </message>
    <message>
        <location filename="../window.py" line="391"/>
        <source>Teach</source>
        <translation>Ensinar</translation>
    </message>
    <message>
        <location filename="../window.py" line="415"/>
        <source>✕</source>
        <translation>✕</translation>
    </message>
    <message>
        <location filename="../window.py" line="416"/>
        <source>Dismiss</source>
        <translation>Fechar</translation>
    </message>
    <message>
        <location filename="../window.py" line="452"/>
        <location filename="../window.py" line="461"/>
        <source>Cancel</source>
        <translation>Cancelar</translation>
    </message>
    <message>
        <location filename="../window.py" line="453"/>
        <source>Stop waiting for this model and keep the current one</source>
        <translation>Parar de esperar por este modelo e manter o atual</translation>
    </message>
    <message>
        <location filename="../window.py" line="462"/>
        <source>Stop auto-detecting the scaling</source>
        <translation>Parar a detecção automática da escala</translation>
    </message>
    <message>
        <location filename="../window.py" line="468"/>
        <source>no model</source>
        <translation>nenhum modelo</translation>
    </message>
    <message>
        <location filename="../window.py" line="522"/>
        <source>Opening {name}…</source>
        <translation>Abrindo {name}…</translation>
    </message>
    <message>
        <location filename="../window.py" line="546"/>
        <source>Opened {name}: {nodes} nodes, {parameters} parameters</source>
        <translation>{name} aberto: {nodes} nós, {parameters} parâmetros</translation>
    </message>
    <message>
        <location filename="../window.py" line="567"/>
        <source>How pixel values are scaled for this model (now: from {source})</source>
        <translation>Como os valores dos pixels são escalados para este modelo (agora: por {source})</translation>
    </message>
    <message>
        <location filename="../window.py" line="575"/>
        <source>guessing…</source>
        <translation>estimando…</translation>
    </message>
    <message>
        <location filename="../window.py" line="575"/>
        <source>The file declares no input scaling: trying each one on 50 MNIST test digits (choose one to stop)</source>
        <translation>O arquivo não declara a escala da entrada: testando cada uma em 50 dígitos de teste do MNIST (escolha uma para parar)</translation>
    </message>
    <message>
        <location filename="../window.py" line="580"/>
        <location filename="../window.py" line="585"/>
        <source>guessed</source>
        <translation>estimada</translation>
    </message>
    <message>
        <location filename="../window.py" line="580"/>
        <source>The file declares no input scaling: 0..1 is assumed (Ctrl+D auto-detects)</source>
        <translation>O arquivo não declara a escala da entrada: presume-se 0..1 (Ctrl+D detecta automaticamente)</translation>
    </message>
    <message>
        <location filename="../window.py" line="586"/>
        <source>The file declares no input scaling: {scaling} was the best on the shipped MNIST digits{scores}. Choose one to confirm it.</source>
        <translation>O arquivo não declara a escala da entrada: {scaling} foi a melhor nos dígitos do MNIST incluídos{scores}. Escolha uma para confirmar.</translation>
    </message>
    <message>
        <location filename="../window.py" line="606"/>
        <source>Trying every input scaling on 50 MNIST test digits…</source>
        <translation>Testando todas as escalas de entrada em 50 dígitos de teste do MNIST…</translation>
    </message>
    <message>
        <location filename="../window.py" line="614"/>
        <source>Auto-detect cancelled</source>
        <translation>Detecção automática cancelada</translation>
    </message>
    <message>
        <location filename="../window.py" line="639"/>
        <source>Scaling {best} is best on {samples} MNIST digits ({scores})</source>
        <translation>A escala {best} é a melhor em {samples} dígitos do MNIST ({scores})</translation>
    </message>
    <message>
        <location filename="../window.py" line="658"/>
        <source>inference {engine} ms · views {views} ms</source>
        <translation>inferência {engine} ms · telas {views} ms</translation>
    </message>
    <message>
        <location filename="../window.py" line="701"/>
        <source>Draw a digit first, then press its key to teach it</source>
        <translation>Desenhe um dígito primeiro e depois aperte a tecla dele para ensiná-lo</translation>
    </message>
    <message>
        <location filename="../window.py" line="710"/>
        <source>Cannot personalize: {error}</source>
        <translation>Não foi possível personalizar: {error}</translation>
    </message>
    <message>
        <location filename="../window.py" line="728"/>
        <source>Personal model ({name} + {count} examples) — digitscope</source>
        <translation>Modelo pessoal ({name} + {count} exemplos) — digitscope</translation>
    </message>
    <message>
        <location filename="../window.py" line="740"/>
        <source>Save personal model</source>
        <translation>Salvar modelo pessoal</translation>
    </message>
    <message>
        <location filename="../window.py" line="741"/>
        <source>ONNX models (*.onnx)</source>
        <translation>Modelos ONNX (*.onnx)</translation>
    </message>
    <message>
        <location filename="../window.py" line="746"/>
        <source>Could not save the personal model: {error}</source>
        <translation>Não foi possível salvar o modelo pessoal: {error}</translation>
    </message>
    <message>
        <location filename="../window.py" line="748"/>
        <source>Saved {path}</source>
        <translation>{path} salvo</translation>
    </message>
    <message>
        <location filename="../window.py" line="763"/>
        <source>Pen width {width}</source>
        <translation>Espessura da caneta {width}</translation>
    </message>
    <message>
        <location filename="../window.py" line="768"/>
        <source>Open ONNX model</source>
        <translation>Abrir modelo ONNX</translation>
    </message>
    <message>
        <location filename="../window.py" line="769"/>
        <source>ONNX models (*.onnx);;All files (*)</source>
        <translation>Modelos ONNX (*.onnx);;Todos os arquivos (*)</translation>
    </message>
    <message>
        <location filename="../window.py" line="774"/>
        <source>Open drawing</source>
        <translation>Abrir desenho</translation>
    </message>
    <message>
        <location filename="../window.py" line="775"/>
        <source>Drawings (*.json);;All files (*)</source>
        <translation>Desenhos (*.json);;Todos os arquivos (*)</translation>
    </message>
    <message>
        <location filename="../window.py" line="783"/>
        <source>Could not open drawing {name}: {error}</source>
        <translation>Não foi possível abrir o desenho {name}: {error}</translation>
    </message>
    <message>
        <location filename="../window.py" line="789"/>
        <source>Save drawing</source>
        <translation>Salvar desenho</translation>
    </message>
    <message>
        <location filename="../window.py" line="790"/>
        <source>Drawings (*.json)</source>
        <translation>Desenhos (*.json)</translation>
    </message>
    <message>
        <location filename="../window.py" line="795"/>
        <source>Could not save the drawing: {error}</source>
        <translation>Não foi possível salvar o desenho: {error}</translation>
    </message>
    <message>
        <location filename="../window.py" line="822"/>
        <source>&lt;h3&gt;digitscope&lt;/h3&gt;&lt;p&gt;Draw a digit and watch a neural network recognise it, layer by layer.&lt;/p&gt;&lt;p&gt;Engine: nn_core {version} — written from scratch on NumPy; reads ONNX models.&lt;/p&gt;&lt;p&gt;Shortcuts: Ctrl+O open · Ctrl+Z undo · Ctrl+Shift+Z / Ctrl+Y redo · Esc / Delete clear · E eraser · [ ] pen width · Ctrl+D auto-detect scaling · Ctrl+1…5 choose scaling · Ctrl+Shift+G graph&lt;/p&gt;</source>
        <translation>&lt;h3&gt;digitscope&lt;/h3&gt;&lt;p&gt;Desenhe um dígito e veja uma rede neural reconhecê-lo, camada por camada.&lt;/p&gt;&lt;p&gt;Motor: nn_core {version} — escrito do zero em NumPy; lê modelos ONNX.&lt;/p&gt;&lt;p&gt;Atalhos: Ctrl+O abrir · Ctrl+Z desfazer · Ctrl+Shift+Z / Ctrl+Y refazer · Esc / Delete limpar · E borracha · [ ] espessura da caneta · Ctrl+D detectar escala · Ctrl+1…5 escolher escala · Ctrl+Shift+G grafo&lt;/p&gt;</translation>
    </message>
    <message>
        <location filename="../window.py" line="828"/>
        <source>About digitscope</source>
        <translation>Sobre o digitscope</translation>
    </message>
    <message>
        <location filename="../window.py" line="830"/>
        <source>digitscope — draw a digit, watch the network think</source>
        <translation>digitscope — desenhe um dígito, veja a rede pensar</translation>
    </message>
</context>
<context>
    <name>ModelSummary</name>
    <message>
        <location filename="../summary.py" line="29"/>
        <source>from the file</source>
        <translation>do arquivo</translation>
    </message>
    <message>
        <location filename="../summary.py" line="30"/>
        <source>your earlier choice</source>
        <translation>sua escolha anterior</translation>
    </message>
    <message>
        <location filename="../summary.py" line="31"/>
        <source>your choice</source>
        <translation>sua escolha</translation>
    </message>
    <message>
        <location filename="../summary.py" line="32"/>
        <source>guessed: auto-detected on open</source>
        <translation>estimada: detectada automaticamente ao abrir</translation>
    </message>
    <message>
        <location filename="../summary.py" line="33"/>
        <source>guessed: auto-detected</source>
        <translation>estimada: detectada automaticamente</translation>
    </message>
    <message>
        <location filename="../summary.py" line="34"/>
        <source>guessed: assumed, the file declares none</source>
        <translation>estimada: presumida, o arquivo não declara nenhuma</translation>
    </message>
    <message>
        <location filename="../summary.py" line="44"/>
        <source>Node</source>
        <translation>Nó</translation>
    </message>
    <message>
        <location filename="../summary.py" line="44"/>
        <source>Op</source>
        <translation>Operação</translation>
    </message>
    <message>
        <location filename="../summary.py" line="45"/>
        <source>Output shape</source>
        <translation>Forma da saída</translation>
    </message>
    <message>
        <location filename="../summary.py" line="45"/>
        <source>Parameters</source>
        <translation>Parâmetros</translation>
    </message>
    <message>
        <location filename="../summary.py" line="46"/>
        <source>File</source>
        <translation>Arquivo</translation>
    </message>
    <message>
        <location filename="../summary.py" line="46"/>
        <source>Producer</source>
        <translation>Produtor</translation>
    </message>
    <message>
        <location filename="../summary.py" line="47"/>
        <source>Opset</source>
        <translation>Opset</translation>
    </message>
    <message>
        <location filename="../summary.py" line="47"/>
        <source>Inputs</source>
        <translation>Entradas</translation>
    </message>
    <message>
        <location filename="../summary.py" line="48"/>
        <source>Outputs</source>
        <translation>Saídas</translation>
    </message>
    <message>
        <location filename="../summary.py" line="48"/>
        <source>Nodes</source>
        <translation>Nós</translation>
    </message>
    <message>
        <location filename="../summary.py" line="49"/>
        <source>Fed as</source>
        <translation>Entrada como</translation>
    </message>
    <message>
        <location filename="../summary.py" line="49"/>
        <source>Scaling</source>
        <translation>Escala</translation>
    </message>
    <message>
        <location filename="../summary.py" line="50"/>
        <source>(in memory)</source>
        <translation>(na memória)</translation>
    </message>
    <message>
        <location filename="../summary.py" line="50"/>
        <source>Calibration</source>
        <translation>Calibração</translation>
    </message>
    <message>
        <location filename="../summary.py" line="51"/>
        <source>Ignored</source>
        <translation>Ignorado</translation>
    </message>
    <message>
        <location filename="../summary.py" line="51"/>
        <source>Input description</source>
        <translation>Descrição da entrada</translation>
    </message>
    <message>
        <location filename="../summary.py" line="52"/>
        <source>Test accuracy</source>
        <translation>Acurácia de teste</translation>
    </message>
    <message>
        <location filename="../summary.py" line="52"/>
        <source>unknown</source>
        <translation>desconhecido</translation>
    </message>
    <message>
        <location filename="../summary.py" line="58"/>
        <source>0..1, ink = 1 (x/255)</source>
        <translation>0..1, tinta = 1 (x/255)</translation>
    </message>
    <message>
        <location filename="../summary.py" line="59"/>
        <source>0..255 raw pixels</source>
        <translation>0..255, pixels brutos</translation>
    </message>
    <message>
        <location filename="../summary.py" line="60"/>
        <source>MNIST normalised ((x-0.1307)/0.3081)</source>
        <translation>normalizada como no MNIST ((x-0.1307)/0.3081)</translation>
    </message>
    <message>
        <location filename="../summary.py" line="61"/>
        <source>-1..1 (x/127.5-1)</source>
        <translation>-1..1 (x/127.5-1)</translation>
    </message>
    <message>
        <location filename="../summary.py" line="62"/>
        <source>inverted 0..1 (dark ink on white)</source>
        <translation>0..1 invertida (tinta escura no branco)</translation>
    </message>
    <message>
        <location filename="../calibration.py" line="145"/>
        <source>temperature {value} from the file&apos;s metadata</source>
        <translation>temperatura {value} dos metadados do arquivo</translation>
    </message>
    <message>
        <location filename="../calibration.py" line="149"/>
        <source>temperature {value} folded into {node}</source>
        <translation>temperatura {value} incorporada a {node}</translation>
    </message>
    <message>
        <location filename="../calibration.py" line="151"/>
        <source>not calibrated (no temperature in the file)</source>
        <translation>não calibrado (o arquivo não tem temperatura)</translation>
    </message>
    <message>
        <location filename="../summary.py" line="185"/>
        <source>Reliability: measured when a ten-class model is open</source>
        <translation>Confiabilidade: medida quando um modelo de dez classes está aberto</translation>
    </message>
    <message>
        <location filename="../summary.py" line="215"/>
        <source>Reliability: measuring on the shipped digits…</source>
        <translation>Confiabilidade: medindo nos dígitos incluídos…</translation>
    </message>
    <message>
        <location filename="../summary.py" line="216"/>
        <source>Reliability: the model failed on a digit ({error})</source>
        <translation>Confiabilidade: o modelo falhou em um dígito ({error})</translation>
    </message>
    <message>
        <location filename="../summary.py" line="217"/>
        <source>Reliability: only for ten-class (digit) models</source>
        <translation>Confiabilidade: só para modelos de dez classes (dígitos)</translation>
    </message>
</context>
<context>
    <name>ProbabilitiesView</name>
    <message>
        <location filename="../probabilities.py" line="25"/>
        <source>Draw a digit</source>
        <translation>Desenhe um dígito</translation>
    </message>
    <message>
        <location filename="../probabilities.py" line="33"/>
        <source>{first} or {second}?</source>
        <translation>{first} ou {second}?</translation>
    </message>
    <message>
        <location filename="../probabilities.py" line="35"/>
        <source>{first} % vs {second} % — a close call</source>
        <translation>{first} % contra {second} % — está apertado</translation>
    </message>
    <message>
        <location filename="../probabilities.py" line="37"/>
        <source>{percent} % confident</source>
        <translation>{percent} % de confiança</translation>
    </message>
    <message>
        <location filename="../probabilities.py" line="140"/>
        <source>computing…</source>
        <translation>calculando…</translation>
    </message>
    <message>
        <location filename="../probabilities.py" line="151"/>
        <source>top %1 of %2 classes</source>
        <translation>as %1 melhores de %2 classes</translation>
    </message>
</context>
<context>
    <name>ReliabilityView</name>
    <message>
        <location filename="../reliability.py" line="53"/>
        <source>ECE {ece} % · {n} digits · accuracy {acc} %, mean confidence {conf} %</source>
        <translation>ECE {ece} % · {n} dígitos · acurácia {acc} %, confiança média {conf} %</translation>
    </message>
    <message>
        <location filename="../reliability.py" line="61"/>
        <source>Each bar: the predictions whose confidence falls in that range, and how many of them were right. A calibrated model&apos;s bars reach the diagonal; red above a bar = overconfident, green = underconfident.</source>
        <translation>Cada barra: as previsões cuja confiança cai nessa faixa e quantas delas acertaram. As barras de um modelo calibrado chegam à diagonal; vermelho acima de uma barra = confiante demais, verde = confiante de menos.</translation>
    </message>
    <message>
        <location filename="../reliability.py" line="64"/>
        <source>Calibration: {how}</source>
        <translation>Calibração: {how}</translation>
    </message>
    <message>
        <location filename="../reliability.py" line="65"/>
        <source>MNIST test digits</source>
        <translation>dígitos de teste do MNIST</translation>
    </message>
    <message>
        <location filename="../reliability.py" line="65"/>
        <source>pen recordings</source>
        <translation>gravações de caneta</translation>
    </message>
    <message>
        <location filename="../reliability.py" line="67"/>
        <source>{count} {name}: ECE {ece} %</source>
        <translation>{count} {name}: ECE {ece} %</translation>
    </message>
    <message>
        <location filename="../reliability.py" line="69"/>
        <source>{low}–{high}: {count} · conf {confidence} % · acc {accuracy} %</source>
        <translation>{low}–{high}: {count} · confiança {confidence} % · acurácia {accuracy} %</translation>
    </message>
    <message>
        <location filename="../reliability.py" line="85"/>
        <source>Reliability: confidence vs accuracy</source>
        <translation>Confiabilidade: confiança × acurácia</translation>
    </message>
    <message>
        <location filename="../reliability.py" line="120"/>
        <source>accuracy</source>
        <translation>acurácia</translation>
    </message>
    <message>
        <location filename="../reliability.py" line="121"/>
        <source>overconfident</source>
        <translation>confiante demais</translation>
    </message>
    <message>
        <location filename="../reliability.py" line="122"/>
        <source>underconfident</source>
        <translation>confiante de menos</translation>
    </message>
    <message>
        <location filename="../reliability.py" line="123"/>
        <source>perfect</source>
        <translation>perfeito</translation>
    </message>
    <message>
        <location filename="../reliability.py" line="129"/>
        <source>x: confidence %</source>
        <translation>x: confiança %</translation>
    </message>
</context>
<context>
    <name>Session</name>
    <message>
        <location filename="../session.py" line="238"/>
        <source>unknown error</source>
        <translation>erro desconhecido</translation>
    </message>
    <message>
        <location filename="../session.py" line="239"/>
        <source>Could not open {name}: {error}</source>
        <translation>Não foi possível abrir {name}: {error}</translation>
    </message>
    <message>
        <location filename="../session.py" line="329"/>
        <source>Could not rasterize the drawing: {error}</source>
        <translation>Não foi possível rasterizar o desenho: {error}</translation>
    </message>
    <message>
        <location filename="../session.py" line="350"/>
        <source>The model failed on this drawing: {error}</source>
        <translation>O modelo falhou neste desenho: {error}</translation>
    </message>
    <message>
        <location filename="../session.py" line="463"/>
        <source>Auto-detect failed: {error}</source>
        <translation>A detecção automática falhou: {error}</translation>
    </message>
</context>
<context>
    <name>TeachPanel</name>
    <message>
        <location filename="../teach_panel.py" line="78"/>
        <source>Wrong? It&apos;s a …  (or press the digit key)</source>
        <translation>Errou? É um …  (ou aperte a tecla do dígito)</translation>
    </message>
    <message>
        <location filename="../teach_panel.py" line="85"/>
        <source>Label this drawing {digit} and keep it as your example ({digit})</source>
        <translation>Rotular este desenho como {digit} e guardá-lo como seu exemplo ({digit})</translation>
    </message>
    <message>
        <location filename="../teach_panel.py" line="95"/>
        <source>Delete selected</source>
        <translation>Excluir selecionados</translation>
    </message>
    <message>
        <location filename="../teach_panel.py" line="97"/>
        <source>Personalize</source>
        <translation>Personalizar</translation>
    </message>
    <message>
        <location filename="../teach_panel.py" line="98"/>
        <source>Fine-tune the current model on your examples (in the background)</source>
        <translation>Ajustar o modelo atual aos seus exemplos (em segundo plano)</translation>
    </message>
    <message>
        <location filename="../teach_panel.py" line="104"/>
        <source>Cancel</source>
        <translation>Cancelar</translation>
    </message>
    <message>
        <location filename="../teach_panel.py" line="112"/>
        <location filename="../teach_panel.py" line="190"/>
        <source>Use the original model</source>
        <translation>Usar o modelo original</translation>
    </message>
    <message>
        <location filename="../teach_panel.py" line="114"/>
        <source>Save personal model…</source>
        <translation>Salvar modelo pessoal…</translation>
    </message>
    <message>
        <location filename="../teach_panel.py" line="151"/>
        <source>{count} examples</source>
        <translation>{count} exemplos</translation>
    </message>
    <message>
        <location filename="../teach_panel.py" line="166"/>
        <source>Personalizing…</source>
        <translation>Personalizando…</translation>
    </message>
    <message>
        <location filename="../teach_panel.py" line="168"/>
        <source>Stopped.</source>
        <translation>Interrompido.</translation>
    </message>
    <message>
        <location filename="../teach_panel.py" line="176"/>
        <source>Personal model installed ({seconds} s).</source>
        <translation>Modelo pessoal instalado ({seconds} s).</translation>
    </message>
    <message>
        <location filename="../teach_panel.py" line="191"/>
        <source>Use the personal model</source>
        <translation>Usar o modelo pessoal</translation>
    </message>
</context>
<context>
    <name>Teacher</name>
    <message>
        <location filename="../teaching.py" line="139"/>
        <source>Your {count} examples: {before} before → {after} after (each held out) · MNIST digits: {mnist_before} → {mnist_after} ({mnist_count} shipped)</source>
        <translation>Seus {count} exemplos: {before} antes → {after} depois (cada um deixado de fora) · dígitos do MNIST: {mnist_before} → {mnist_after} ({mnist_count} incluídos)</translation>
    </message>
    <message>
        <location filename="../teaching.py" line="213"/>
        <source>a personalization is already running</source>
        <translation>uma personalização já está em andamento</translation>
    </message>
    <message>
        <location filename="../teaching.py" line="217"/>
        <source>no model is open</source>
        <translation>nenhum modelo está aberto</translation>
    </message>
    <message>
        <location filename="../teaching.py" line="221"/>
        <source>teach some examples first: draw a digit and press its key</source>
        <translation>ensine alguns exemplos primeiro: desenhe um dígito e aperte a tecla dele</translation>
    </message>
    <message>
        <location filename="../teaching.py" line="272"/>
        <source>Cannot personalize {name}: {error}</source>
        <translation>Não foi possível personalizar {name}: {error}</translation>
    </message>
    <message>
        <location filename="../teaching.py" line="305"/>
        <source>there is no personal model yet: personalize first</source>
        <translation>ainda não há modelo pessoal: personalize primeiro</translation>
    </message>
    <message>
        <location filename="../teaching.py" line="322"/>
        <source>its input {layout} takes a fixed batch; fine-tuning needs a model whose batch axis is free</source>
        <translation>a entrada dele, {layout}, tem lote fixo; o ajuste fino precisa de um modelo com o eixo de lote livre</translation>
    </message>
    <message>
        <location filename="../teaching.py" line="330"/>
        <source>Measuring the model as it is…</source>
        <translation>Medindo o modelo como está…</translation>
    </message>
    <message>
        <location filename="../teaching.py" line="345"/>
        <source>Held-out check…</source>
        <translation>Verificação com exemplos deixados de fora…</translation>
    </message>
    <message>
        <location filename="../teaching.py" line="353"/>
        <source>Held-out check {fold} of {folds}…</source>
        <translation>Verificação com exemplos deixados de fora: {fold} de {folds}…</translation>
    </message>
    <message>
        <location filename="../teaching.py" line="363"/>
        <source>Learning your examples…</source>
        <translation>Aprendendo seus exemplos…</translation>
    </message>
    <message>
        <location filename="../teaching.py" line="381"/>
        <source>Done</source>
        <translation>Concluído</translation>
    </message>
</context>
</TS>
